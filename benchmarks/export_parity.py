"""How far the exported model is from ``predict_proba`` on images of another
size than training, and how far a naive resize is.

Trains ``CCClassifier`` on 16x16 pictures whose class is a coloured square,
exports it to ONNX (the graph resizes its input as ``predict`` does) and
reports the largest absolute difference in probability between
``onnxruntime`` on the full picture (uint8 / 255, any size) and
``predict_proba`` of the library, for:

- uint8 arrays of several sizes;
- PNG files (the library decodes them with Pillow, resizes in uint8);
- JPEG files decoded in full, while ``predict`` decodes a large JPEG at a
  reduced DCT scale (Pillow's draft mode), and decoded that way too;
- a naive deployment: the picture squashed to 16x16 with Pillow's bilinear
  resize (no aspect ratio kept, no centre crop), fed to the same graph.

Example::

    python benchmarks/export_parity.py            # 64 pictures per size
    python benchmarks/export_parity.py --smoke    # seconds, 8 pictures, 2 sizes
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

SIZES = [(37, 29), (9, 40), (60, 45), (240, 180)]


def pictures(shape, n, seed):
    """``n`` pictures of ``shape`` with the class's square (class i % 3)."""
    rng = np.random.RandomState(seed)
    X = rng.randint(0, 200, (n, *shape, 3)).astype(np.uint8)
    h, w = shape
    for i in range(n):
        X[i, h // 4: 3 * h // 4, w // 4: 3 * w // 4, i % 3] = 255
    return X


def chw(X):
    return np.ascontiguousarray(X.transpose(0, 3, 1, 2), dtype=np.float32) / 255


def fitted(epochs):
    from sklearn_npll import CCClassifier

    X = pictures((16, 16), 48, seed=0)
    y = np.arange(48) % 3
    return CCClassifier(max_epochs=epochs, batch_size=16, lr=0.05, random_state=0).fit(X, y)


def measure(clf, session, shape, n, folder):
    """Max |difference| in probability for one input size, per route."""
    from PIL import Image

    X = pictures(shape, n, seed=hash(shape) % 1000)
    run = lambda batch: session.run(None, {"x": chw(batch)})[1]  # noqa: E731
    png, jpg = [], []
    for i, picture in enumerate(X):
        png.append(str(folder / f"{shape[0]}x{shape[1]}-{i}.png"))
        jpg.append(str(folder / f"{shape[0]}x{shape[1]}-{i}.jpg"))
        Image.fromarray(picture).save(png[-1])
        Image.fromarray(picture).save(jpg[-1], quality=95)
    full = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in jpg])
    drafted = []
    for p in jpg:  # as predict decodes: the smallest DCT scale covering 16x16
        with Image.open(p) as im:
            side = min(im.size)
            im.draft("RGB", (round(im.size[0] * 16 / side), round(im.size[1] * 16 / side)))
            drafted.append(np.asarray(im.convert("RGB")))
    naive = np.stack([np.asarray(Image.fromarray(p).resize((16, 16), Image.Resampling.BILINEAR))
                      for p in X])
    by_file = clf.predict_proba(jpg)
    return {
        "arrays": np.abs(run(X) - clf.predict_proba(X)).max(),
        "png files": np.abs(run(X) - clf.predict_proba(png)).max(),
        "jpeg, full decode": np.abs(run(full) - by_file).max(),
        "jpeg, draft decode": max(np.abs(run(d[None]) - by_file[i:i + 1]).max()
                                  for i, d in enumerate(drafted)),
        "naive squash to 16x16": np.abs(run(naive) - clf.predict_proba(X)).max(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="pictures per size")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="seconds: 8 pictures, 2 sizes")
    args = parser.parse_args(argv)
    import onnxruntime

    from sklearn_npll.export import to_onnx

    sizes = SIZES[:2] if args.smoke else SIZES
    n = 8 if args.smoke else args.n
    clf = fitted(3 if args.smoke else args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        session = onnxruntime.InferenceSession(str(to_onnx(clf, folder / "model.onnx")),
                                               providers=["CPUExecutionProvider"])
        rows = {shape: measure(clf, session, shape, n, folder) for shape in sizes}
    routes = list(next(iter(rows.values())))
    print(f"max |ONNX - predict_proba| in probability, model trained at 16x16, {n} pictures "
          "per size")
    print(f"{'input (HxW)':<12}" + "".join(f"{r:>24}" for r in routes))
    for (h, w), found in rows.items():
        print(f"{f'{h}x{w}':<12}" + "".join(f"{found[r]:>24.2e}" for r in routes))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

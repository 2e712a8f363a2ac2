"""Fingerprints of fixed-seed fits: a refactoring must leave them unchanged.

Fits Co-Reg (through its warm-up, division, co-training and the contrastive
and prototype terms, with a validation hold-out, verified labels, a warm-start
continuation and ``partial_fit``), PRODEN and CC on small images (a CNN) and on
feature vectors (an MLP), and the annotator on a tiny random open_clip
checkpoint; prints, per case, a SHA-256 of the predicted probabilities, the
disambiguated labels and the numeric history (or of the annotator's votes and
candidate sets). Run it before a change with ``--save before.json`` and after
it with ``--compare before.json``: it exits 1 and names every case that
differs.

Examples
--------
::

    python benchmarks/fingerprint.py --save /tmp/before.json
    python benchmarks/fingerprint.py --compare /tmp/before.json
    python benchmarks/fingerprint.py --smoke
"""

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))


def _digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return h.hexdigest()[:16]


def _history(clf):
    rows = []
    for row in clf.history:
        rows.append([float(v) for k, v in sorted(row.items())
                     if k not in ("dur", "batches") and isinstance(v, (int, float, np.number))])
    return np.array([x for r in rows for x in r], dtype=np.float64)


def _data(smoke):
    from sklearn.datasets import load_digits

    from sklearn_npll import make_partial_labels

    digits = load_digits()
    n = 120 if smoke else 400
    images = (digits.images[:n] * 255 / 16).astype(np.uint8)
    y = digits.target[:n]
    Y = make_partial_labels(y, 0.2, 0.2, n_classes=10, random_state=0)
    features = digits.data[:n].astype(np.float32) / 16
    return images, features, y, Y


def _cases(smoke):
    from sklearn_npll import CCClassifier, CoRegClassifier, PRODENClassifier

    epochs = 3 if smoke else 6
    coreg = dict(max_epochs=epochs, warmup_epochs=2, start_contrastive=0, batch_size=32,
                 lr=0.05, queue_size=256, flip=False, random_state=0, device="cpu")
    base = dict(max_epochs=epochs, batch_size=32, lr=0.05, flip=False, random_state=0,
                device="cpu")
    return {
        "coreg-images": lambda: CoRegClassifier(**coreg),
        "coreg-features-valid": lambda: CoRegClassifier(validation_fraction=0.2,
                                                       class_aware_division=True,
                                                       class_prior="candidates", **coreg),
        "proden-images": lambda: PRODENClassifier(augment="strong", **base),
        "proden-features": lambda: PRODENClassifier(**base),
        "cc-images": lambda: CCClassifier(**base),
        "cc-features-valid": lambda: CCClassifier(validation_fraction=0.2, **base),
    }


def classifier_fingerprints(smoke):
    images, features, y, Y = _data(smoke)
    out = {}
    for name, make in _cases(smoke).items():
        X = features if "features" in name else images
        t = time.perf_counter()
        clf = make().fit(X, Y)
        out[name] = {"proba": _digest(clf.predict_proba(X)),
                     "labels": _digest(clf.label_distribution_),
                     "history": _digest(_history(clf)),
                     "seconds": round(time.perf_counter() - t, 2)}
    # Co-Reg: verified labels, then a warm-start continuation and partial_fit
    from sklearn_npll import CoRegClassifier

    verified = np.zeros(len(y), bool)
    verified[:20] = True
    Yv = Y.copy()
    Yv[:20] = np.eye(10, dtype=Y.dtype)[y[:20]]
    clf = CoRegClassifier(max_epochs=4, warmup_epochs=2, start_contrastive=0, batch_size=32,
                          lr=0.05, queue_size=256, random_state=1, device="cpu",
                          warm_start=True)
    clf.fit(features, Yv, verified=verified)
    clf.set_params(max_epochs=5)
    clf.fit(features, Yv, verified=verified)
    clf.partial_fit(features, Yv)
    out["coreg-verified-warm-partial"] = {"proba": _digest(clf.predict_proba(features)),
                                          "history": _digest(_history(clf))}
    if not smoke:
        # 32 px RGB images: the default PreAct ResNet-18, padded random crops, flips
        rgb = np.repeat(np.kron(images[:64], np.ones((4, 4), np.uint8))[..., None], 3, -1)
        clf = CoRegClassifier(max_epochs=3, warmup_epochs=1, start_contrastive=0,
                              batch_size=16, queue_size=64, random_state=0,
                              device="cpu").fit(rgb, Y[:64])
        out["coreg-resnet18-32px"] = {"proba": _digest(clf.predict_proba(rgb)),
                                      "history": _digest(_history(clf))}
    return out


def annotator_fingerprint(smoke):
    from _common import save_tiny_clip

    from sklearn_npll import VLMPartialAnnotator

    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(24 if smoke else 64, 32, 32, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_tiny_clip(Path(tmp))
        out = {}
        for mode in ("multi_prompt", "topk", "prob_ratio"):
            ann = VLMPartialAnnotator(class_names=["cat", "dog", "car", "tree"],
                                      model_name="npll-tiny-test", pretrained=path,
                                      mode=mode, k=2, cache_dir=None, device="cpu")
            result = ann.fit_transform(images)
            out[f"annotator-{mode}"] = {
                "candidates": _digest(np.asarray(result.candidates)),
                "votes": _digest(np.asarray(result.votes)),
                "proba": _digest(ann.predict_proba(images))}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--save", help="write the fingerprints to this JSON file")
    p.add_argument("--compare", help="compare with fingerprints saved earlier")
    p.add_argument("--smoke", action="store_true", help="smaller fits, a few seconds")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    prints = {**classifier_fingerprints(args.smoke), **annotator_fingerprint(args.smoke)}
    for name, values in prints.items():
        shown = " ".join(f"{k}={v}" for k, v in values.items())
        print(f"{name:30s} {shown}")
    print(f"{len(prints)} cases in {time.perf_counter() - start:.1f} s")
    if args.save:
        Path(args.save).write_text(json.dumps(prints, indent=1))
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        changed = [f"{name}.{key}" for name, values in before.items()
                   for key, value in values.items()
                   if key != "seconds" and prints.get(name, {}).get(key) != value]
        if changed:
            print("CHANGED: " + ", ".join(changed))
            return 1
        print(f"identical: {len(before)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Co-Reg's collapse guard: the global division against the class-aware one.

Two regimes on scikit-learn's digits with uniformly flipped candidate sets
(q=0.1, eta=0.3):

- ``weak``: SmallCNN of width 8 and a short warm-up. The network leaves the
  warm-up without some classes, the global division trusts only the classes
  already learned and the others vanish from the trusted split (the regime
  described in ``run.py``'s CPU configuration).
- ``normal``: the default SmallCNN (width 32) and the CPU suite's warm-up,
  where the class-aware division must not hurt.

For each regime, seed and division (``global``, ``class-aware``) it prints
the test accuracy, the most classes missing from a trusted split in any
epoch and at the last epoch, and whether the missing-class warning fired.

Examples
--------
::

    python benchmarks/division_guard.py --seeds 0 1
    python benchmarks/division_guard.py --smoke
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from data import load_dataset  # noqa: E402

REGIMES = {
    "weak": dict(width=8, max_epochs=20, warmup_epochs=4, start_contrastive=1),
    "normal": dict(width=32, max_epochs=24, warmup_epochs=14, start_contrastive=1),
}
SMOKE = dict(max_epochs=2, warmup_epochs=1, start_contrastive=0)


def fit_one(regime, class_aware, seed, X, y, Xt, yt, smoke):
    import torch

    from sklearn_npll import CoRegClassifier, make_partial_labels

    torch.set_num_threads(1)
    cfg = dict(REGIMES[regime])
    width = cfg.pop("width")
    if smoke:
        cfg.update(SMOKE)
    Y = make_partial_labels(y, 0.1, 0.3, n_classes=10, random_state=seed)
    clf = CoRegClassifier(batch_size=64, lr=0.05, flip=False, module__width=width,
                          class_aware_division=class_aware, random_state=seed,
                          device="cpu", **cfg)
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(X, Y)
    seconds = time.perf_counter() - t
    missing = [max(row["missing_classes_a"], row["missing_classes_b"])
               for row in clf.history if not np.isnan(row["missing_classes_a"])]
    return {"regime": regime, "division": "class-aware" if class_aware else "global",
            "seed": seed, "test_accuracy": float(np.mean(clf.predict(Xt) == yt)),
            "max_missing_classes": int(max(missing)), "last_missing_classes": int(missing[-1]),
            "warned": any("trusted split holds no sample" in str(w.message) for w in caught),
            "n_trusted_last": [int(clf.history[-1, "n_trusted_a"]),
                               int(clf.history[-1, "n_trusted_b"])],
            "seconds": round(seconds, 1), "config": {"width": width, **cfg}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    p.add_argument("--out", type=Path, help="write the records as JSON here")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run: weak regime only, 150 samples, 2 epochs")
    args = p.parse_args(argv)
    X, y, Xt, yt, _, _ = load_dataset("digits")
    if args.smoke:
        X, y, Xt, yt = X[:150], y[:150], Xt[:200], yt[:200]
        args.regimes, args.seeds = ["weak"], args.seeds[:1]
    records = []
    print("regime  division     seed  test acc  max missing  last missing  warned  "
          "trusted A/B  seconds")
    for regime in args.regimes:
        for seed in args.seeds:
            for class_aware in (False, True):
                r = fit_one(regime, class_aware, seed, X, y, Xt, yt, args.smoke)
                records.append(r)
                print(f"{r['regime']:7s} {r['division']:12s} {r['seed']:4d}  "
                      f"{r['test_accuracy']:8.3f}  {r['max_missing_classes']:11d}  "
                      f"{r['last_missing_classes']:12d}  {str(r['warned']):6s}  "
                      f"{r['n_trusted_last'][0]:5d}/{r['n_trusted_last'][1]:<5d}  "
                      f"{r['seconds']:7.1f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()

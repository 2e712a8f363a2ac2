"""What a few verified labels add to Co-Reg on instance-dependent noise.

Digits with candidate sets from the hardest annotator panel of the CPU suite
(2 annotators, 2 shots, a 0.3 view of the pixels, top-1: about 31% of the
sets miss the true class). For k verified labels per class, k samples of
each class (drawn with the seed) get their true label as a singleton set,
marked with ``fit(..., verified=mask)``; the other sets are unchanged.
``--mark no`` (or ``both``) fits with the same corrected sets left unmarked,
a control that separates the effect of the corrected sets from that of the
trust.

Same configuration as ``run.py --config cpu`` for digits (SmallCNN, 24
epochs, 14 warm-up, batch 64, lr 0.05).

Examples
--------
::

    python benchmarks/verified_labels.py --per-class 0 1 5 20 --seeds 0 1 2
    python benchmarks/verified_labels.py --per-class 5 20 --mark no --seeds 0
    python benchmarks/verified_labels.py --per-class 0 --class-aware --seeds 0 1
    python benchmarks/verified_labels.py --smoke
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import CONFIGS, cell_data, make_candidates  # noqa: E402

SETTING = "a2_s2_f0.3_k1"


def verified_mask(y, k, seed):
    rng = np.random.RandomState(1000 + seed)
    mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        mask[rng.choice(rows, min(k, len(rows)), replace=False)] = True
    return mask


def main(argv=None):
    import torch

    from sklearn_npll import CoRegClassifier

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, nargs="+", default=[0, 1, 5, 20])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--mark", choices=["yes", "no", "both"], default="yes",
                   help="mark the corrected samples as verified (yes), leave them "
                        "unmarked (no: the control), or fit both")
    p.add_argument("--class-aware", action="store_true",
                   help="fit with class_aware_division=True")
    p.add_argument("--out", type=Path, help="write the records as JSON here")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run: 5 verified labels per class, 150 samples, 2 epochs")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = dict(CONFIGS["cpu"]["digits"])
    epochs = dict(max_epochs=cfg["epochs"], warmup_epochs=cfg["warmup"],
                  start_contrastive=cfg["start_contrastive"])
    if args.smoke:
        epochs = dict(max_epochs=2, warmup_epochs=1, start_contrastive=0)
        args.per_class, args.seeds, args.mark = [5], args.seeds[:1], "yes"
    print("per class  marked  seed  test acc  noise rate  seconds")
    records = []
    for seed in args.seeds:
        cell = {"dataset": "digits", "protocol": "panel", "setting": SETTING, "seed": seed}
        X, y, Xt, yt, names, _, pool = cell_data(cfg, cell)
        if args.smoke:
            X, y, Xt, yt = X[:150], y[:150], Xt[:200], yt[:200]
        Y0, _ = make_candidates(cell, y, X, pool, len(names))
        for k in args.per_class:
            mask = verified_mask(y, k, seed)
            Y = np.array(Y0, copy=True)
            Y[mask] = np.eye(len(names), dtype=Y.dtype)[y[mask]]
            marks = {"yes": [True], "no": [False], "both": [True, False]}[args.mark]
            for marked in (marks if k else [False]):
                clf = CoRegClassifier(batch_size=cfg["batch_size"], lr=cfg["lr"], flip=False,
                                      class_aware_division=args.class_aware,
                                      random_state=seed, device="cpu", **epochs)
                t = time.perf_counter()
                clf.fit(X, Y, verified=mask if (marked and k) else None)
                r = {"per_class": k, "marked": bool(marked and k), "seed": seed,
                     "class_aware_division": args.class_aware,
                     "test_accuracy": float(np.mean(clf.predict(Xt) == yt)),
                     "noise_rate": float(1 - Y[np.arange(len(y)), y].mean()),
                     "seconds": round(time.perf_counter() - t, 1)}
                records.append(r)
                print(f"{k:9d}  {str(r['marked']):6s}  {seed:4d}  {r['test_accuracy']:8.3f}  "
                      f"{r['noise_rate']:10.3f}  {r['seconds']:7.1f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()

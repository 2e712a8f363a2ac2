"""Train a digit classifier from noisy candidate sets, without one clean label.

Candidate sets for scikit-learn's bundled 8x8 digits are ambiguous and often
wrong. By default they follow the paper's synthetic protocol (each wrong
class joins a set with probability q, then with probability eta the true
class is swapped out); with --panel they come from a panel of weak few-shot
"annotators" voting on every image, whose mistakes depend on the image, like
a vision-language model's with many prompt templates. Co-Reg learns from the
sets alone; the same network trained with the classifier-consistent loss
(CC) is shown for comparison.

Run: python examples/demo.py [--epochs 30] [--panel]
"""

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_npll import (
    CCClassifier,
    CoRegClassifier,
    candidate_stats,
    make_annotator_partial_labels,
    make_partial_labels,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--q", type=float, default=0.1, help="synthetic partial rate")
    parser.add_argument("--eta", type=float, default=0.3, help="synthetic noise rate")
    parser.add_argument("--panel", action="store_true",
                        help="candidate sets from an annotator panel instead")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small images: one thread is fastest

    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)          # (n, 8, 8) grey
    X, X_test, y, y_test = train_test_split(images, digits.target, test_size=0.25,
                                            stratify=digits.target, random_state=args.seed)
    X_train, X_pool, y_train, y_pool = train_test_split(X, y, test_size=0.3, stratify=y,
                                                        random_state=args.seed)
    if args.panel:
        Y, stats, panel = make_annotator_partial_labels(
            X_train.reshape(len(X_train), -1), y_train, X_pool.reshape(len(X_pool), -1),
            y_pool, n_annotators=3, n_shots=5, feature_fraction=0.3, random_state=args.seed)
        vote = panel.predict(X_test.reshape(len(X_test), -1))
    else:
        Y = make_partial_labels(y_train, args.q, args.eta, random_state=args.seed)
        stats = candidate_stats(Y, y_train)
    print(f"{len(Y)} training images, no true label used; mean candidate-set size "
          f"{stats['mean_size']:.2f}; true class missing from {stats['noise_rate']:.1%} "
          "of the sets")
    if args.panel:
        print(f"{'annotators majority vote':>26}: test accuracy {np.mean(vote == y_test):.3f}")

    common = dict(max_epochs=args.epochs, batch_size=64, flip=False, random_state=args.seed)
    models = {
        "CC (same network)": CCClassifier(**common),
        "Co-Reg": CoRegClassifier(warmup_epochs=args.epochs // 3,
                                  start_contrastive=max(1, args.epochs // 6), **common),
    }
    for name, model in models.items():
        start = time.time()
        model.fit(X_train, Y)
        print(f"{name:>26}: test accuracy {model.score(X_test, y_test):.3f} "
              f"({time.time() - start:.0f} s)")
    last = models["Co-Reg"].history_[-1]
    print(f"Co-Reg's last division trusted {last['n_trusted_a']} / {last['n_trusted_b']} "
          f"images (networks A / B): estimated noise rate {last['noise_rate']:.1%}")


if __name__ == "__main__":
    main()

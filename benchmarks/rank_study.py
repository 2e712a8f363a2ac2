"""Which score ranks students as their test accuracy does?

A user who trains several configurations on a teacher's candidate sets must
pick one without test labels. Two label-free or nearly label-free scores are
compared here against true test accuracy, on the teacher protocol's cells
written by ``run.py`` (each holds its test predictions):

- the **covering rate** on held-out annotated images: the fraction of
  predictions inside the teacher's candidate set (``score`` /
  ``covering_rate_scorer``). It rewards agreeing with the teacher, so a
  student that fixes the teacher's errors loses points;
- the accuracy on a small **verified audit set**: ``k`` images per class
  labelled by hand (``k`` = 5 and 20), drawn at random from the test images;
  the true accuracy is then measured on the other test images.

For every seed, the configurations (every method of the teacher protocol
except those trained on true labels, the teacher's zero-shot included) are
ranked by each score and by true accuracy; the table reports Spearman's rank
correlation (mean over seeds and, for the audit, over ``--draws`` random
audit sets) and the test accuracy points lost by choosing the configuration
the score ranks first instead of the truly best one.

Usage::

    python benchmarks/rank_study.py                      # results/ -> table
    python benchmarks/rank_study.py --smoke              # synthetic cells
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent
AUDIT_SIZES = (5, 20)


def load_cells(results, dataset="fashion-mnist-lite0", setting="multi_prompt"):
    """``{seed: {method label: (test predictions, covering rate)}}`` of the
    teacher protocol's cells on candidate sets (true-labels cells have no
    covering rate and are left out)."""
    cells = {}
    for path in sorted(Path(results).glob(f"{dataset}__teacher__{setting}__*.json")):
        record = json.loads(path.read_text())
        if "test_predictions" not in record or record.get("test_covering_rate") is None:
            continue
        cells.setdefault(record["seed"], {})[record["method_label"]] = (
            np.asarray(record["test_predictions"]), record["test_covering_rate"],
            record["test_accuracy"])
    return cells


def check_labels(cells, y):
    """Refuse labels that do not give the cells' recorded test accuracy."""
    for seed, configs in cells.items():
        for name, (pred, _, accuracy) in configs.items():
            if abs(np.mean(pred == y) - accuracy) > 1e-9:
                raise ValueError(f"seed {seed}, {name}: the test labels give accuracy "
                                 f"{np.mean(pred == y):.4f}, the cell recorded {accuracy:.4f}.")


def audit_split(y, k, rng):
    """A mask of ``k`` random images per class (the audit set)."""
    audit = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        audit[rng.choice(np.flatnonzero(y == c), size=k, replace=False)] = True
    return audit


def rank_scores(configs, y, draws=200, seed=0):
    """Spearman correlation with true accuracy and best-pick rate of each
    score, over one seed's configurations.

    Parameters
    ----------
    configs : dict
        ``{label: (test predictions, covering rate, recorded accuracy)}``.
    y : ndarray
        True test labels.
    draws : int
        Random audit sets per ``k``.

    Returns
    -------
    scores : dict
        ``{score name: (list of Spearman rho, list of accuracy points lost
        by taking the configuration the score ranks first instead of the
        truly best)}``.
    """
    labels = sorted(configs)
    pred = np.stack([configs[name][0] for name in labels])
    covering = np.array([configs[name][1] for name in labels])
    true = (pred == y).mean(1)
    out = {"covering rate": ([spearmanr(covering, true)[0]],
                             [100 * float(true.max() - true[np.argmax(covering)])])}
    rng = np.random.default_rng(seed)
    for k in AUDIT_SIZES:
        rhos, lost = [], []
        for _ in range(draws):
            audit = audit_split(y, k, rng)
            score = (pred[:, audit] == y[audit]).mean(1)
            rest = (pred[:, ~audit] == y[~audit]).mean(1)
            rhos.append(spearmanr(score, rest)[0])
            lost.append(100 * float(rest.max() - rest[np.argmax(score)]))
        out[f"audit, {k} labels / class"] = (rhos, lost)
    return out


def study(cells, y, draws=200):
    """Pool :func:`rank_scores` over seeds; rows of the report's table."""
    pooled = {}
    for seed, configs in sorted(cells.items()):
        for name, (rhos, lost) in rank_scores(configs, y, draws, seed).items():
            pooled.setdefault(name, ([], []))
            pooled[name][0].extend(rhos)
            pooled[name][1].extend(lost)
    return [(name, float(np.nanmean(rhos)), float(np.mean(lost)))
            for name, (rhos, lost) in pooled.items()]


def format_table(rows, cells):
    n_configs = sorted({len(c) for c in cells.values()})
    lines = [f"{len(cells)} seed(s), {'/'.join(map(str, n_configs))} configurations each",
             "", "| score | Spearman rho with test accuracy | points lost by its pick |",
             "| --- | --- | --- |"]
    lines += [f"| {name} | {rho:.3f} | {lost:.1f} |" for name, rho, lost in rows]
    return "\n".join(lines)


def test_labels(n_test=None, data_dir=None):
    """Fashion-MNIST's test labels, in the order run.py's cells predict them
    (the feature path embeds the same images in the same order)."""
    sys.path.insert(0, str(HERE))
    from data import load_dataset

    y_test = load_dataset("fashion-mnist", data_dir=data_dir, n_test=n_test)[3]
    return np.asarray(y_test)


def _smoke():
    """Synthetic cells: a teacher that errs systematically, and students
    that fix a varying share of its errors; the covering rate favours the
    ones closest to the teacher, the audit the accurate ones."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, size=2000)
    teacher = np.where(rng.random(2000) < 0.5, y, (y + 1) % 10)
    sets = np.zeros((2000, 10), dtype=bool)
    sets[np.arange(2000), teacher] = True
    cells = {}
    for seed in range(2):
        configs = {"teacher": (teacher, 1.0, None)}
        for i, fixed in enumerate((0.2, 0.4, 0.6, 0.8)):
            pred = np.where(rng.random(2000) < fixed, y, teacher)
            configs[f"student {i}"] = (pred, float(sets[np.arange(2000), pred].mean()), None)
        cells[seed] = configs
    rows = study(cells, y, draws=20)
    print(format_table(rows, cells))
    by_name = {name: rho for name, rho, _ in rows}
    assert by_name["covering rate"] < 0 < by_name["audit, 20 labels / class"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--draws", type=int, default=200, help="audit sets per k and seed")
    parser.add_argument("--smoke", action="store_true", help="synthetic cells, a few draws")
    args = parser.parse_args(argv)
    if args.smoke:
        return _smoke()
    cells = load_cells(args.results)
    if not cells:
        raise SystemExit(f"no teacher-protocol cells with test predictions in {args.results}; "
                         "run: python benchmarks/run.py --suite teacher-features")
    n_test = len(next(iter(next(iter(cells.values())).values()))[0])
    y = test_labels(n_test, args.data_dir)
    check_labels(cells, y)
    print(format_table(study(cells, y, args.draws), cells))


if __name__ == "__main__":
    main()

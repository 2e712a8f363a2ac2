"""The annotation report: per class, what the candidate sets look like."""

import numpy as np

from .._data.candidates import check_candidates


def _table(columns):
    try:
        import pandas as pd
    except ImportError:
        return columns
    return pd.DataFrame(columns).set_index("class")


def annotation_report(candidates, classes, votes=None, y=None, template_names=None):
    """Per-class summary of candidate sets (and of the votes, with true labels).

    Parameters
    ----------
    candidates : array-like of shape (n_samples, n_classes)
        0/1 candidate matrix.
    classes : array-like of shape (n_classes,)
        Class names, one per column.
    votes : ndarray of shape (n_samples, n_templates), default=None
        Each template's voted class index.
    y : array-like of shape (n_samples,), default=None
        True labels (elements of ``classes``), when known.
    template_names : list of str, default=None
        Column labels of the per-template vote accuracies.

    Returns
    -------
    report : pandas.DataFrame or dict of lists
        One row per class plus a last row ``"(all)"``; a DataFrame indexed by
        ``class`` when pandas is installed, else a dict of columns. Columns:
        ``in_sets`` (sets holding the class), ``mean_set_size`` (mean size of
        those sets); with ``y``: ``support`` (samples of the class),
        ``coverage`` (share of them whose set holds it), ``noise_rate``
        (``1 - coverage``) and, with ``votes``, one ``vote_accuracy[<template>]``
        column per template (share of the class's samples that the template
        voted right).
    """
    Y, classes = check_candidates(candidates, classes=classes)
    classes = np.asarray(classes)
    n, n_classes = Y.shape
    sizes = Y.sum(axis=1)
    held = Y.astype(bool)
    columns = {"class": [str(c) for c in classes] + ["(all)"]}
    in_sets = held.sum(axis=0)
    columns["in_sets"] = [int(v) for v in in_sets] + [n]
    columns["mean_set_size"] = [
        float(sizes[held[:, c]].mean()) if in_sets[c] else float("nan") for c in range(n_classes)
    ] + [float(sizes.mean()) if n else float("nan")]
    if y is None:
        return _table(columns)
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have one label per sample ({n}), got shape {y.shape}.")
    lookup = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in y} - set(lookup))
    if unknown:
        raise ValueError(f"y holds labels that are not classes: {unknown[:5]}.")
    idx = np.array([lookup[str(v)] for v in y], dtype=np.int64)
    covered = held[np.arange(n), idx]

    def per_class(values):
        out = []
        for c in range(n_classes):
            mask = idx == c
            out.append(float(values[mask].mean()) if mask.any() else float("nan"))
        return out + [float(values.mean()) if n else float("nan")]

    columns["support"] = [int((idx == c).sum()) for c in range(n_classes)] + [n]
    columns["coverage"] = per_class(covered)
    columns["noise_rate"] = [1 - v for v in columns["coverage"]]
    if votes is not None:
        votes = np.asarray(votes)
        names = template_names or [f"template {t}" for t in range(votes.shape[1])]
        for t, name in enumerate(names):
            columns[f"vote_accuracy[{name}]"] = per_class(votes[:, t] == idx)
    return _table(columns)

"""Scores that need candidate sets only, no true labels."""

import warnings

import numpy as np

from ._data.candidates import (_as_numpy, _format_list, _label_positions, check_candidates,
                               frame_columns)
from ._data.columns import align_candidates

__all__ = ["covering_rate", "covering_rate_scorer"]


def covering_rate(Y, y_pred, classes=None):
    """Fraction of predictions that fall inside their candidate set.

    A model selection score that needs no true labels: with candidate sets
    that usually hold the true label, a better classifier predicts a
    candidate more often.

    Parameters
    ----------
    Y : array-like
        Candidate sets, in any form :func:`check_candidates` accepts; usually
        an (n_samples, n_classes) 0/1 matrix. A DataFrame's columns are
        matched to ``classes`` by name (without ``classes``, its column
        names are the classes); a plain matrix's columns follow ``classes``.
    y_pred : array-like of shape (n_samples,)
        Predicted class labels. With ``classes`` (or a DataFrame's column
        names) they are mapped to column positions (a label not in
        ``classes`` raises an error); otherwise they must be integer column
        indices of ``Y``.
    classes : array-like of shape (n_classes,), default=None
        Class names, one per column of ``Y``.

    Returns
    -------
    score : float
        In [0, 1]; 1 when every prediction is a candidate.

    Examples
    --------
    >>> from sklearn_npll.metrics import covering_rate
    >>> Y = [[1, 1, 0], [0, 0, 1], [1, 0, 0]]
    >>> covering_rate(Y, [1, 2, 2])
    0.6666666666666666
    >>> covering_rate(Y, ["b", "c", "a"], classes=["a", "b", "c"])
    1.0
    """
    y_pred = np.asarray(_as_numpy(y_pred))
    if y_pred.ndim != 1:
        raise ValueError(f"y_pred must be 1-D, got shape {y_pred.shape}.")
    explicit = classes is not None or frame_columns(_as_numpy(Y)) is not None
    Y01, classes = check_candidates(Y, n_samples=y_pred.size, classes=classes)
    return _covering_rate(Y01, y_pred, classes, explicit_classes=explicit)


def _covering_rate(Y01, y_pred, classes, explicit_classes):
    if explicit_classes:
        cols = _label_positions(y_pred, classes, what="Predicted labels")
    else:
        cols = _column_indices(y_pred, Y01.shape[1])
    return float(Y01[np.arange(Y01.shape[0]), cols].mean())


def _column_indices(y_pred, n_columns):
    kind = y_pred.dtype.kind
    if kind == "f" and np.all(np.isfinite(y_pred)) and np.all(y_pred == np.round(y_pred)):
        y_pred = y_pred.astype(np.int64)
        kind = "i"
    if kind not in "iu":
        raise ValueError(
            f"Without classes, y_pred must hold integer column indices of Y, got "
            f"dtype {y_pred.dtype}. Pass classes= to map class labels to columns."
        )
    bad = (y_pred < 0) | (y_pred >= n_columns)
    if np.any(bad):
        raise ValueError(
            f"y_pred holds column indices outside 0..{n_columns - 1}: "
            f"{_format_list(np.unique(y_pred[bad]))}. Pass classes= to map class "
            "labels to columns."
        )
    return y_pred.astype(np.intp)


def covering_rate_scorer(estimator, X, Y=None):
    """Covering rate of a fitted classifier, usable as ``scoring=`` in a search.

    Parameters
    ----------
    estimator : fitted classifier
        Must have ``classes_`` and ``predict``.
    X : object
        Samples passed to ``estimator.predict``.
    Y : array-like, DataFrame or list of sets, default=None
        Candidate sets of ``X``, read against ``estimator.classes_`` by one
        rule: a DataFrame's columns are matched to the classes by name (a
        column naming no class, or a class without a column, is an error);
        a plain 0/1 matrix (numpy, sparse, tensor) must have one column per
        class, **in** ``classes_`` **order** -- mind that a model fitted on
        sets or labels of strings has them sorted, and that another order
        cannot be detected; sets and 1-D labels are read by class name.
        When ``None`` and ``X`` is an :class:`AnnotatedImages`, its
        ``candidates`` are used, their columns matched by ``X.classes``.

    Returns
    -------
    score : float
        Fraction of predictions inside their candidate set.

    Warns
    -----
    UserWarning
        When candidate sets of ``X`` hold a class that no candidate set of
        the model's training data held (recorded in ``candidate_counts_``
        by this library's classifiers; any class missing from ``classes_``
        for other estimators): the model cannot predict it. In
        cross-validation, a split whose training part lacks a class its
        test part holds; :class:`~sklearn_npll.model_selection.CandidateSetKFold`
        avoids it.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyClassifier
    >>> from sklearn_npll.metrics import covering_rate_scorer
    >>> X = np.zeros((4, 2))
    >>> clf = DummyClassifier(strategy="most_frequent").fit(X, [0, 0, 1, 2])
    >>> Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])
    >>> covering_rate_scorer(clf, X, Y)
    0.5

    It works as ``scoring=`` of ``GridSearchCV`` when ``y`` is a candidate
    matrix, or ``None`` with annotated images as ``X`` or with a ``Pipeline``
    whose first steps annotate ``X`` (the label-free pipeline): the last step
    is then scored against the candidate sets of the transformed ``X``.
    """
    if Y is None and getattr(X, "candidates", None) is None and hasattr(estimator, "steps") \
            and len(estimator.steps) > 1:
        # a Pipeline whose first steps (e.g. the annotator) turn X into images
        # that carry their candidate sets: score its last step on those
        return covering_rate_scorer(estimator[-1], estimator[:-1].transform(X))
    classes = np.asarray(estimator.classes_)
    if Y is None:
        if getattr(X, "candidates", None) is None:
            raise ValueError(
                "No candidate sets to score against: pass Y, or annotated images "
                "(which carry their candidates) as X."
            )
        Y01, columns = align_candidates(X.candidates, classes, names=X.classes)
    else:
        Y01, columns = align_candidates(Y, classes)
    y_pred = np.asarray(_as_numpy(estimator.predict(X)))
    if y_pred.ndim != 1:
        raise ValueError(f"estimator.predict returned shape {y_pred.shape}; expected 1-D.")
    if y_pred.size != Y01.shape[0]:
        raise ValueError(f"The candidate sets have {Y01.shape[0]} rows but X has "
                         f"{y_pred.size} samples; give one candidate set per sample.")
    _warn_unseen_classes(estimator, Y01, columns)
    cols = _label_positions(y_pred, classes, what="Predicted labels")
    return float(Y01[np.arange(Y01.shape[0]), cols].mean())


def _warn_unseen_classes(estimator, Y01, columns):
    """Warn when the candidate sets ``Y01`` (columns ``columns``, the
    estimator's classes first) hold classes the estimator never saw in a
    training candidate set."""
    n_known = len(estimator.classes_)
    counts = getattr(estimator, "candidate_counts_", None)
    never = np.ones(len(columns), dtype=bool)
    never[:n_known] = False
    if counts is not None and len(counts) == n_known:
        never[:n_known] = np.asarray(counts) == 0
    unseen = np.flatnonzero(never & (Y01.sum(axis=0) > 0))
    if unseen.size == 0:
        return
    rows = int((Y01[:, unseen].sum(axis=1) > 0).sum())
    warnings.warn(
        f"{rows} of the {Y01.shape[0]} scored samples hold class(es) "
        f"{_format_list(np.asarray(columns)[unseen])} that no candidate set of the model's "
        "training data held: the model cannot predict them, so these samples are covered "
        "only through their other candidates. In cross-validation, the training part of "
        "this split lacks a class its test part holds (unshuffled folds of data in class "
        "order do this): split with sklearn_npll.model_selection.CandidateSetKFold "
        "(shuffled, stratified on the sets).", UserWarning, stacklevel=3)

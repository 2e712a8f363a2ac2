"""Scores that need candidate sets only, no true labels."""

import numpy as np

from ._data.candidates import _as_numpy, _format_list, _label_positions, check_candidates

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
        an (n_samples, n_classes) 0/1 matrix.
    y_pred : array-like of shape (n_samples,)
        Predicted class labels. With ``classes`` they are mapped to column
        positions (a label not in ``classes`` raises an error); without
        ``classes`` they must be integer column indices of ``Y``.
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
    explicit = classes is not None
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
    Y : array-like, default=None
        Candidate sets of ``X``: a 2-D 0/1 matrix whose columns follow
        ``estimator.classes_``, or anything :func:`check_candidates` accepts
        with ``classes=estimator.classes_``. When ``None`` and ``X`` is an
        :class:`AnnotatedImages`, its ``candidates`` are used (columns matched
        to ``estimator.classes_`` by class name).

    Returns
    -------
    score : float
        Fraction of predictions inside their candidate set.

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
    y_pred = np.asarray(_as_numpy(estimator.predict(X)))
    if y_pred.ndim != 1:
        raise ValueError(f"estimator.predict returned shape {y_pred.shape}; expected 1-D.")
    if Y is None:
        candidates = getattr(X, "candidates", None)
        if candidates is None:
            raise ValueError(
                "No candidate sets to score against: pass Y, or annotated images "
                "(which carry their candidates) as X."
            )
        Y01, x_classes = check_candidates(
            candidates, n_samples=y_pred.size, classes=getattr(X, "classes", None)
        )
        cols = _label_positions(y_pred, x_classes, what="Predicted labels")
        return float(Y01[np.arange(Y01.shape[0]), cols].mean())
    Y_arr = _as_numpy(Y)
    if isinstance(Y_arr, np.ndarray) and Y_arr.ndim == 2 and Y_arr.shape[1] != classes.size:
        raise ValueError(
            f"Y has {Y_arr.shape[1]} columns but the estimator knows "
            f"{classes.size} classes (estimator.classes_); the columns of Y must "
            "follow estimator.classes_."
        )
    Y01, classes = check_candidates(Y_arr, n_samples=y_pred.size, classes=classes)
    return _covering_rate(Y01, y_pred, classes, explicit_classes=True)

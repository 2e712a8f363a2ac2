"""Validation and conversion of candidate label sets.

Every public entry point that receives candidate sets (the classifier, the
metrics, the dataset helpers) goes through :func:`check_candidates`, so that
the accepted formats and the error messages are the same everywhere.
"""

import numbers
from collections.abc import Set

import numpy as np

__all__ = ["check_candidates", "check_probabilities", "column_order", "frame_columns",
           "holds_candidate_sets", "is_candidate_set_list"]

_MAX_LISTED = 5


def _format_list(values, max_listed=_MAX_LISTED):
    """Format the first few items of ``values`` for an error message."""
    values = list(values)
    shown = ", ".join(repr(v.item() if isinstance(v, np.generic) else v)
                      for v in values[:max_listed])
    if len(values) > max_listed:
        shown += f", ... ({len(values)} in total)"
    return "[" + shown + "]"


def _as_numpy(Y):
    """Turn torch tensors and scipy sparse matrices into numpy arrays; return
    anything else as it is."""
    if hasattr(Y, "toarray") and callable(Y.toarray):  # scipy sparse
        return np.asarray(Y.toarray())
    if hasattr(Y, "detach") and hasattr(Y, "cpu"):  # torch tensor
        return Y.detach().cpu().numpy()
    return Y


def _check_classes(classes, n_columns=None):
    """Validate a vector of class names (1-D, no duplicates)."""
    classes = np.asarray(_as_numpy(classes))
    if classes.ndim != 1:
        raise ValueError(
            f"classes must be a 1-D sequence of class names, got an array of "
            f"shape {classes.shape}."
        )
    if classes.size == 0:
        raise ValueError("classes is empty; give at least one class name.")
    uniques, counts = np.unique(classes, return_counts=True)
    if uniques.size != classes.size:
        raise ValueError(
            f"classes contains duplicates: {_format_list(uniques[counts > 1])}. "
            "Each class name must appear once."
        )
    if n_columns is not None and classes.size != n_columns:
        raise ValueError(
            f"The candidate matrix has {n_columns} columns but {classes.size} "
            f"classes were given; pass one class name per column."
        )
    return classes


def _label_positions(labels, classes, *, what="labels"):
    """Map class labels to their column positions in ``classes``.

    Parameters
    ----------
    labels : array-like of shape (n,)
        Class labels; each must be an element of ``classes``.
    classes : ndarray of shape (C,)
        Class names, one per column (in any order).
    what : str
        Name used for ``labels`` in the error message.

    Returns
    -------
    positions : ndarray of shape (n,), dtype=intp

    Raises
    ------
    ValueError
        If some labels are not in ``classes``; the message lists them.
    """
    labels = np.asarray(_as_numpy(labels))
    classes = np.asarray(classes)
    if labels.size == 0:
        return np.zeros(labels.shape, dtype=np.intp)
    numeric, text = "biuf", "US"
    same_kind = (labels.dtype.kind in numeric and classes.dtype.kind in numeric) or (
        labels.dtype.kind in text and classes.dtype.kind in text
    )
    if same_kind:
        order = np.argsort(classes, kind="stable")
        sorted_classes = classes[order]
        idx = np.minimum(np.searchsorted(sorted_classes, labels), classes.size - 1)
        found = np.asarray(sorted_classes[idx] == labels, dtype=bool)
        positions = order[idx].astype(np.intp)
    else:  # object arrays or mixed kinds: exact lookup by hashing
        lookup = {}
        for i, c in enumerate(classes.tolist()):
            lookup.setdefault(c, i)
        try:
            positions = np.array(
                [lookup.get(v, -1) for v in labels.ravel().tolist()], dtype=np.intp
            ).reshape(labels.shape)
        except TypeError as exc:  # unhashable labels
            raise ValueError(f"{what} must be hashable class names ({exc}).") from exc
        found = positions >= 0
    if not np.all(found):
        unknown = list(dict.fromkeys(labels[~found].tolist()))
        raise ValueError(
            f"{what} contain values that are not in classes: "
            f"{_format_list(unknown)}. Known classes: {_format_list(classes, 10)}."
        )
    return positions


def _type_names(values):
    """Sorted names of the Python types in ``values``, for error messages."""
    return sorted({type(v).__name__ for v in values})


def _is_set_like(item):
    return isinstance(item, (Set, list, tuple, np.ndarray))


def is_candidate_set_list(Y):
    """Whether ``Y`` is a sequence of per-sample collections of class names.

    The library's one reading of such a list: a list of Python sets, or of
    lists of unequal lengths or of non-numeric names. A list of equal-length
    numeric rows is a 0/1 matrix, not a list of sets.

    Examples
    --------
    >>> is_candidate_set_list([{"cat"}, {"cat", "dog"}])
    True
    >>> is_candidate_set_list([[1, 0], [0, 1]])
    False
    """
    if isinstance(Y, np.ndarray):
        if Y.dtype != object or Y.ndim != 1:
            return False
        items = Y
    elif isinstance(Y, (list, tuple)):
        items = Y
    else:
        return False
    if len(items) == 0 or not all(_is_set_like(item) for item in items):
        return False
    if any(isinstance(item, Set) for item in items):
        return True
    # A list of equal-length numeric rows is read as a 0/1 matrix.
    lengths = {len(item) for item in items}
    if len(lengths) > 1:
        return True
    flat = np.asarray(items, dtype=object).ravel().tolist()
    return not all(
        isinstance(v, (numbers.Number, np.bool_)) and not isinstance(v, str)
        for v in flat
    )


def holds_candidate_sets(y):
    """Whether ``y`` holds candidate sets (a 2-D matrix or a list of sets)
    rather than one label per sample.

    Examples
    --------
    >>> holds_candidate_sets([[1, 0], [1, 1]]), holds_candidate_sets(["cat", "dog"])
    (True, False)
    """
    y = _as_numpy(y)
    return is_candidate_set_list(y) or np.ndim(y) == 2


def _sets_to_matrix(sets, classes):
    n = len(sets)
    members = [list(s) for s in sets]
    if classes is None:
        all_names = [name for row in members for name in row]
        if not all_names:
            raise ValueError(
                "Every candidate set is empty; each sample needs at least one "
                "candidate class."
            )
        names_obj = np.empty(len(all_names), dtype=object)
        names_obj[:] = all_names
        try:
            classes = np.asarray(np.unique(names_obj).tolist())
        except TypeError as exc:
            raise ValueError(
                "Could not sort the class names found in the candidate sets: they "
                f"mix types {_type_names(all_names)}. Use class names of a "
                "single type, e.g. all strings."
            ) from exc
    else:
        classes = _check_classes(classes)
    rows = np.repeat(np.arange(n), [len(row) for row in members])
    names = [name for row in members for name in row]
    Y = np.zeros((n, classes.size), dtype=np.uint8)
    if names:
        names_arr = np.empty(len(names), dtype=object)
        names_arr[:] = names
        cols = _label_positions(names_arr, classes, what="Candidate sets")
        Y[rows, cols] = 1
    return Y, classes


def _check_binary(Y):
    """Return a uint8 copy of a 2-D 0/1 matrix or raise naming the first bad entry."""
    kind = Y.dtype.kind
    if kind == "b":
        return Y.astype(np.uint8)
    if kind not in "iuf":
        raise ValueError(
            f"A 2-D candidate matrix must hold 0/1 (or boolean) entries, got "
            f"dtype {Y.dtype}. For sets of class names, pass a list of sets."
        )
    bad = ~((Y == 0) | (Y == 1))
    if np.any(bad):
        r, c = np.argwhere(bad)[0]
        n_bad = int(bad.sum())
        raise ValueError(
            f"A candidate matrix must contain only 0 and 1; found {Y[r, c].item()!r} at "
            f"row {r}, column {c} ({n_bad} non-binary entries in total). For "
            "sets of integer class labels, pass a list of Python sets instead "
            "of a matrix."
        )
    return Y.astype(np.uint8)


def _as_array(Y):
    """``Y`` as a numpy array, or a ValueError listing the accepted forms."""
    try:
        return np.asarray(Y)
    except ValueError as exc:
        raise ValueError(
            "Could not read the candidate sets as an array "
            f"({exc}). Pass a 0/1 matrix, a 1-D label vector or a list of "
            "sets of class names."
        ) from exc


def _labels_to_matrix(labels, classes):
    """Singleton candidate sets of a 1-D label vector: ``(Y01, classes)``."""
    if labels.size == 0:
        raise ValueError("The candidate sets are empty (0 samples).")
    if labels.dtype.kind == "f" and np.any(np.isnan(labels)):
        bad = np.flatnonzero(np.isnan(labels))
        raise ValueError(
            f"Labels contain NaN at rows {_format_list(bad)}; every "
            "sample needs a label or a candidate set."
        )
    if classes is None:
        try:
            classes, cols = np.unique(labels, return_inverse=True)
        except TypeError as exc:
            raise ValueError(
                "Could not sort the labels: they mix types "
                f"{_type_names(labels.tolist())}. Use labels of a "
                "single type, e.g. all strings."
            ) from exc
        cols = cols.reshape(-1)
    else:
        classes = _check_classes(classes)
        cols = _label_positions(labels, classes, what="Labels")
    Y01 = np.zeros((labels.size, classes.size), dtype=np.uint8)
    Y01[np.arange(labels.size), cols] = 1
    return Y01, classes


def _check_matrix(Y, classes):
    """A non-empty 2-D 0/1 matrix as uint8, with its column names: ``(Y01, classes)``."""
    if Y.shape[0] == 0:
        raise ValueError("The candidate matrix is empty (0 rows).")
    if Y.shape[1] == 0:
        raise ValueError(
            "The candidate matrix has 0 columns; it needs one column "
            "per class."
        )
    Y01 = _check_binary(Y)
    if classes is None:
        classes = np.arange(Y.shape[1])
    else:
        classes = _check_classes(classes, n_columns=Y.shape[1])
    return Y01, classes


def frame_columns(Y):
    """The column labels of a 2-D DataFrame (its class names), else None."""
    columns = getattr(Y, "columns", None)
    if columns is None or getattr(Y, "ndim", 2) != 2:
        return None
    return np.asarray(columns)


def column_order(names, classes):
    """Positions of ``classes`` among the column ``names`` of a matrix.

    The one column rule for named columns: each class has one column, found
    by name in any order, and no column names another class. Columns that
    pandas numbered 0..n-1 by default are read in order, unless these
    numbers are the class names.

    Returns
    -------
    order : ndarray of shape (n_classes,) or None
        ``Y[:, order]`` has its columns in ``classes`` order; None when the
        columns are already read in order.

    Raises
    ------
    ValueError
        If a column names no class, or a class has no column; the message
        lists them.
    """
    names, classes = np.asarray(names), np.asarray(classes)
    lookup = {name: j for j, name in enumerate(names.tolist())}
    if len(lookup) < len(names):
        raise ValueError(f"The candidate matrix has duplicate column names: "
                         f"{_format_list(names)}; name each class once.")
    if list(lookup) == list(range(len(names))) and set(classes.tolist()) != set(lookup):
        return None  # pandas' default numbers, not class names
    known = set(classes.tolist())
    unknown = [name for name in lookup if name not in known]
    missing = [c for c in classes.tolist() if c not in lookup]
    if unknown or missing:
        raise ValueError(
            "The columns of the candidate matrix are matched to the classes by name: "
            f"columns {_format_list(unknown)} name no class and classes "
            f"{_format_list(missing)} have no column. Known classes: "
            f"{_format_list(classes, 10)}. Give one column per class, named by the class "
            "(or a plain array whose columns follow the classes).")
    return np.array([lookup[c] for c in classes.tolist()], dtype=np.intp)


def _check_frame(Y, names, classes):
    """A DataFrame candidate matrix: its column names are its classes, read
    in ``classes`` order when given."""
    if classes is None:
        return _check_matrix(np.asarray(Y), None if list(names) == list(range(len(names)))
                             else _check_classes(names))
    classes = _check_classes(classes)
    order = column_order(names, classes)
    return _check_matrix(np.asarray(Y) if order is None else np.asarray(Y)[:, order], classes)


def _check_rows(Y01, n_samples):
    """Raise unless ``Y01`` has ``n_samples`` rows (when given), none of them empty."""
    n = Y01.shape[0]
    if n_samples is not None and n != n_samples:
        raise ValueError(
            f"The candidate sets have {n} rows but X has {n_samples} samples; "
            "give one candidate set per sample."
        )
    empty = np.flatnonzero(Y01.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(
            f"{empty.size} sample(s) have no candidate label, at rows "
            f"{_format_list(empty)}. Every candidate set must contain at least "
            "one class; drop these samples or give them candidates."
        )


def check_candidates(Y, *, n_samples=None, classes=None):
    """Validate candidate label sets and convert them to a 0/1 matrix.

    Parameters
    ----------
    Y : array-like
        Candidate sets in one of these forms:

        - a 2-D matrix of shape (n_samples, n_classes) with 0/1 (or boolean)
          entries, column ``j`` standing for ``classes[j]``;
        - a DataFrame of 0/1 columns named by class: with ``classes``, its
          columns are matched to them by name, in any order (a column that
          names no class, or a class without a column, is an error);
          without, its column names are the classes. Columns that pandas
          numbered 0..n-1 are read in order unless these numbers are the
          class names;
        - a 1-D vector of labels, read as singleton candidate sets;
        - a list of sets (or lists / tuples) of class names, one per sample.
          Use Python sets for sets of integer labels: a list of equal-length
          numeric lists is read as a 0/1 matrix.

        Torch tensors and scipy sparse matrices are accepted as well.
    n_samples : int, default=None
        Expected number of samples (rows). When given, a different number
        raises an error.
    classes : array-like of shape (n_classes,), default=None
        Class names. Defaults to ``np.arange(n_columns)`` for a matrix,
        ``np.unique(Y)`` for 1-D labels and the sorted union of the names for
        a list of sets. For a matrix it must have one name per column; for
        labels and sets every name used must be in it.

    Returns
    -------
    Y01 : ndarray of shape (n_samples, n_classes), dtype=uint8
        ``Y01[i, j] == 1`` when ``classes[j]`` is a candidate for sample ``i``.
    classes : ndarray of shape (n_classes,)
        The class names, one per column of ``Y01``.

    Raises
    ------
    ValueError
        If a row has no candidate (the first few such rows are listed), a
        matrix entry is not 0/1, the number of rows differs from
        ``n_samples``, a label is not in ``classes``, or ``classes`` does not
        have one name per column.

    Examples
    --------
    >>> from sklearn_npll._data.candidates import check_candidates
    >>> Y, classes = check_candidates([{"cat"}, {"cat", "dog"}])
    >>> Y
    array([[1, 0],
           [1, 1]], dtype=uint8)
    >>> classes.tolist()
    ['cat', 'dog']
    >>> Y, classes = check_candidates([[1, 0, 1], [0, 1, 0]])
    >>> classes
    array([0, 1, 2])
    """
    Y = _as_numpy(Y)
    names = frame_columns(Y)
    if names is not None:
        Y01, classes = _check_frame(Y, names, classes)
    elif is_candidate_set_list(Y):
        Y01, classes = _sets_to_matrix(list(Y), classes)
    else:
        arr = _as_array(Y)
        if arr.ndim == 1:
            Y01, classes = _labels_to_matrix(arr, classes)
        elif arr.ndim == 2:
            Y01, classes = _check_matrix(arr, classes)
        else:
            raise ValueError(
                "Candidate sets must be a 2-D 0/1 matrix (n_samples, "
                "n_classes), a 1-D label vector or a list of sets; got an "
                f"array of shape {arr.shape}."
            )
    _check_rows(Y01, n_samples)
    return Y01, np.asarray(classes)


def check_probabilities(P, *, n_samples=None, classes=None, atol=1e-3):
    """Validate soft labels: a matrix of class probabilities, one row per sample.

    Parameters
    ----------
    P : array-like of shape (n_samples, n_classes) or (n_samples,)
        Non-negative rows summing to one (within ``atol``; they are
        renormalised), e.g. a teacher's predicted probabilities; a DataFrame's
        column names are its classes. 1-D labels are read as one-hot rows.
    n_samples : int, default=None
        Expected number of rows.
    classes : array-like of shape (n_classes,), default=None
        Class names, one per column (default: the DataFrame's columns, else
        ``np.arange(n_classes)``).
    atol : float, default=1e-3
        Tolerance on the row sums.

    Returns
    -------
    P : ndarray of shape (n_samples, n_classes), dtype float32
    classes : ndarray of shape (n_classes,)

    Examples
    --------
    >>> P, classes = check_probabilities([[0.7, 0.3], [0.0, 1.0]], classes=["cat", "dog"])
    >>> P.dtype, classes.tolist()
    (dtype('float32'), ['cat', 'dog'])
    """
    if hasattr(P, "columns") and classes is None:
        classes = np.asarray(P.columns)
    arr = np.asarray(_as_numpy(P))
    if arr.ndim == 1:
        Y, classes = check_candidates(arr, n_samples=n_samples, classes=classes)
        return Y.astype(np.float32), classes
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise ValueError(
            "Soft labels must be a numeric (n_samples, n_classes) matrix of probabilities "
            f"(or 1-D labels); got an array of shape {arr.shape} and dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("Soft labels must be finite and non-negative probabilities.")
    sums = arr.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > atol)
    if bad.size:
        raise ValueError(
            f"Each row of the soft labels must sum to 1; rows {_format_list(bad)} sum to "
            f"{_format_list(np.round(sums[bad], 4))}. For candidate sets (0/1 rows) use a "
            "partial-label classifier (CoRegClassifier, PRODENClassifier, CCClassifier).")
    if n_samples is not None and arr.shape[0] != n_samples:
        raise ValueError(f"The soft labels have {arr.shape[0]} rows but X has {n_samples} "
                         "samples; give one row per sample.")
    classes = (np.arange(arr.shape[1]) if classes is None
               else _check_classes(classes, n_columns=arr.shape[1]))
    return (arr / sums[:, None]).astype(np.float32), np.asarray(classes)

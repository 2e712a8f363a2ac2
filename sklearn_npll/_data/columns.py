"""The one column rule: how candidate sets meet a fitted model's ``classes_``.

``score``, the covering-rate scorer and the HTML report read candidate sets
against the classes a model was fitted on, all through
:func:`align_candidates`:

- named columns (a DataFrame's, or an ``AnnotatedImages``' ``classes``) are
  matched to ``classes_`` by name, in any order; a column that names no
  class, or a class without a column, is an error;
- a plain matrix (numpy, sparse, tensor, nested lists) has one column per
  class in ``classes_`` order; its width is checked, its order cannot be;
- sets of class names and 1-D labels are read by name; names the model was
  not fitted on are kept as extra columns, which no prediction can cover.
"""

import numpy as np

from .candidates import (_as_numpy, _format_list, check_candidates, column_order, frame_columns,
                         is_candidate_set_list)

__all__ = ["align_candidates"]


def _by_name(Y01, names, classes):
    """The columns of ``Y01`` (named ``names``) in ``classes`` order, the
    names not in ``classes`` appended after them."""
    lookup = {c: j for j, c in enumerate(classes.tolist())}
    extra = [name for name in names.tolist() if name not in lookup]
    for name in extra:
        lookup[name] = len(lookup)
    columns = np.empty(len(lookup), dtype=object)
    columns[:] = list(lookup)
    if not extra:
        columns = classes
    aligned = np.zeros((Y01.shape[0], len(lookup)), dtype=np.uint8)
    aligned[:, [lookup[name] for name in names.tolist()]] = Y01
    return aligned, columns


def align_candidates(Y, classes, *, names=None, n_samples=None):
    """Candidate sets as a 0/1 matrix whose columns follow ``classes``.

    Parameters
    ----------
    Y : array-like, DataFrame or list of sets
        Candidate sets in any form :func:`check_candidates` accepts.
    classes : array-like of shape (n_classes,)
        The fitted model's classes (its ``classes_``).
    names : array-like of shape (n_columns,), default=None
        The class of each column of a matrix ``Y`` (an ``AnnotatedImages``'
        ``classes``); a DataFrame's column labels by default.
    n_samples : int, default=None
        Expected number of rows.

    Returns
    -------
    Y01 : ndarray of shape (n_samples, n_columns), dtype=uint8
        Columns ``0..n_classes - 1`` follow ``classes``; any further column
        stands for a class that sets of names hold but ``classes`` lacks.
    columns : ndarray of shape (n_columns,)
        ``classes``, followed by those extra class names.

    Raises
    ------
    ValueError
        If named columns do not name each class once, or a plain matrix has
        another width than ``len(classes)``.
    """
    classes = np.asarray(classes)
    Y = _as_numpy(Y)
    if names is None:
        names = frame_columns(Y)
    if names is not None:  # named columns: every class once, by name
        order = column_order(names, classes)
        matrix = np.asarray(Y)
        matrix = matrix if order is None else matrix[:, order]
        return _plain(matrix, classes, n_samples), classes
    if is_candidate_set_list(Y) or np.ndim(Y) == 1:  # names in the sets
        Y01, own = check_candidates(Y, n_samples=n_samples)
        return _by_name(Y01, own, classes)
    return _plain(Y, classes, n_samples), classes


def _plain(Y, classes, n_samples):
    """A matrix whose columns follow ``classes``, one per class."""
    width = np.shape(Y)[1] if np.ndim(Y) == 2 else None
    if width is not None and width != classes.size:
        raise ValueError(
            f"The candidate matrix has {width} columns but the model knows {classes.size} "
            f"classes ({_format_list(classes, 10)}); the columns of a plain array follow "
            "classes_, one per class. Pass a DataFrame to match columns by name.")
    return check_candidates(Y, n_samples=n_samples, classes=classes)[0]

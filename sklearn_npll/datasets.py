"""Candidate label sets for experiments: synthetic noise, annotator votes, statistics."""

import numbers

import numpy as np
from sklearn.utils import check_random_state

from ._candidates import _as_numpy, _check_classes, _format_list, _label_positions, check_candidates

__all__ = ["make_partial_labels", "votes_to_candidates", "candidate_stats"]


def _check_generator(random_state):
    """Return a ``numpy.random.Generator`` seeded from ``random_state``.

    ``random_state`` may be ``None``, an int, a ``numpy.random.RandomState``
    (as accepted by :func:`sklearn.utils.check_random_state`) or a
    ``numpy.random.Generator`` (used as is). An int always gives the same
    generator; ``None`` and a ``RandomState`` draw the seed from that state,
    so seeding numpy's global state makes ``None`` reproducible.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    rs = check_random_state(random_state)
    seed = rs.randint(0, 2**32, size=4, dtype=np.uint64)
    return np.random.default_rng(seed)


def _check_rate(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {value!r}.")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")
    return float(value)


def make_partial_labels(y, partial_rate, noise_rate, *, n_classes=None, random_state=None):
    """Draw noisy partial label sets from true labels (uniform flipping).

    For each sample the candidate set first holds the true label, and each
    of the other classes joins it independently with probability
    ``q = partial_rate``. Then, with probability ``eta = noise_rate``, the
    true label is swapped for one class drawn uniformly among those not yet
    in the set: the set keeps its size but no longer holds the true label. A
    set that already holds every class is left alone.

    The expected set size is ``1 + q (C - 1)`` and the expected noise rate
    (true label missing) is ``eta (1 - q ** (C - 1))``.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        True labels. Without ``n_classes`` the columns of the result follow
        ``np.unique(y)``; with ``n_classes`` they follow
        ``range(n_classes)`` and ``y`` must hold integers in that range.
    partial_rate : float in [0, 1]
        Probability ``q`` that a wrong class joins a set.
    noise_rate : float in [0, 1]
        Probability ``eta`` that the true label is swapped out of a set.
    n_classes : int, default=None
        Number of classes ``C``, for integer labels ``0..C-1`` where some
        classes may be absent from ``y``.
    random_state : int, RandomState instance, Generator or None, default=None
        Seeds the draws; the same int gives the same matrix.

    Returns
    -------
    Y : ndarray of shape (n_samples, n_classes), dtype=uint8
        The candidate matrix; every row has at least one candidate.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll.datasets import make_partial_labels
    >>> y = np.array([0, 1, 2, 1])
    >>> Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.1,
    ...                         random_state=0)
    >>> Y.shape, Y.dtype, bool(Y.sum(axis=1).min() >= 1)
    ((4, 3), dtype('uint8'), True)
    """
    y = np.asarray(_as_numpy(y))
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D vector of labels, got shape {y.shape}.")
    if y.size == 0:
        raise ValueError("y is empty; give at least one label.")
    q = _check_rate(partial_rate, "partial_rate")
    eta = _check_rate(noise_rate, "noise_rate")
    if n_classes is None:
        try:
            _, codes = np.unique(y, return_inverse=True)
        except TypeError as exc:
            raise ValueError(f"Could not sort the labels in y ({exc}).") from exc
        codes = codes.reshape(-1)
        C = int(codes.max()) + 1
    else:
        if isinstance(n_classes, (bool, np.bool_)) or not isinstance(
            n_classes, numbers.Integral
        ) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}.")
        C = int(n_classes)
        if y.dtype.kind not in "iu":
            raise ValueError(
                f"With n_classes, y must hold integer labels in 0..{C - 1}; got "
                f"dtype {y.dtype}. Leave n_classes=None to use np.unique(y)."
            )
        bad = np.flatnonzero((y < 0) | (y >= C))
        if bad.size:
            raise ValueError(
                f"y holds labels outside 0..{C - 1} (n_classes={C}), first at "
                f"index {bad[0]}: {y[bad[0]].item()!r} ({bad.size} in total)."
            )
        codes = y.astype(np.intp)

    rng = _check_generator(random_state)
    n = y.size
    rows = np.arange(n)
    member = rng.random((n, C)) < q
    member[rows, codes] = True
    flip = rng.random(n) < eta
    flip &= member.sum(axis=1) < C
    flipped = np.flatnonzero(flip)
    if flipped.size:
        keys = rng.random((flipped.size, C))
        keys[member[flipped]] = -1.0  # never pick a class already in the set
        new = keys.argmax(axis=1)
        member[flipped, new] = True
        member[flipped, codes[flipped]] = False
    return member.astype(np.uint8)


def _missing_mask(V):
    """Return (missing mask, array of the non-missing votes) for a 2-D vote array."""
    kind = V.dtype.kind
    if kind in "iu":
        missing = V == -1
    elif kind == "f":
        missing = np.isnan(V) | (V == -1)
    elif kind in "US":
        missing = V == V.dtype.type("")
    elif kind == "b":
        missing = np.zeros(V.shape, dtype=bool)
    elif kind == "O":
        def is_missing(v):
            if v is None:
                return True
            if isinstance(v, str):
                return v == ""
            if isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)):
                return bool(np.isnan(v)) or v == -1
            return False

        missing = np.vectorize(is_missing, otypes=[bool])(V) if V.size else np.zeros(
            V.shape, dtype=bool
        )
    else:
        raise ValueError(f"Unsupported dtype for votes: {V.dtype}.")
    values = V[~missing]
    if kind == "O" and values.size:
        try:
            typed = np.asarray(values.tolist())
        except (ValueError, TypeError):
            typed = values
        if typed.dtype.kind in "biufUS" and typed.shape == values.shape:
            kinds = {type(v) for v in values.tolist()}
            if not (str in kinds and len(kinds) > 1):  # no silent str casting
                values = typed
    if values.dtype.kind == "f" and values.size and np.all(values == np.round(values)):
        values = values.astype(np.int64)
    return missing, values


def votes_to_candidates(votes, classes=None):
    """Merge the votes of several annotators into candidate sets.

    The candidate set of a sample is the union of the labels its annotators
    voted for; the order of the annotators does not matter.

    Parameters
    ----------
    votes : array-like of shape (n_samples, n_annotators)
        One label per sample and annotator (a 1-D vector is one annotator).
        A missing vote is ``None``, ``NaN`` or ``-1`` for numeric votes (so
        ``-1`` cannot be a class label), and ``None`` or ``""`` for string
        votes.
    classes : array-like of shape (n_classes,), default=None
        Class names, one per output column. Defaults to the sorted distinct
        votes. Integer votes with non-integer ``classes`` (for example class
        names) are read as column indices into ``classes``; otherwise votes
        are labels that must appear in ``classes``.

    Returns
    -------
    Y : ndarray of shape (n_samples, n_classes), dtype=uint8
        ``Y[i, j] == 1`` when some annotator voted ``classes[j]`` for sample
        ``i``.
    classes : ndarray of shape (n_classes,)

    Raises
    ------
    ValueError
        If a sample has no vote at all (the rows are listed) or a vote is not
        in ``classes``.

    Examples
    --------
    >>> from sklearn_npll.datasets import votes_to_candidates
    >>> Y, classes = votes_to_candidates([["cat", "dog"], ["dog", None]])
    >>> Y
    array([[1, 1],
           [0, 1]], dtype=uint8)
    >>> classes.tolist()
    ['cat', 'dog']
    """
    V = np.asarray(_as_numpy(votes))
    if V.ndim == 1:
        V = V[:, None]
    if V.ndim != 2:
        raise ValueError(
            f"votes must be a 2-D array (n_samples, n_annotators), got shape {V.shape}."
        )
    if V.shape[0] == 0 or V.shape[1] == 0:
        raise ValueError(f"votes is empty (shape {V.shape}).")
    missing, values = _missing_mask(V)
    no_vote = np.flatnonzero(missing.all(axis=1))
    if no_vote.size:
        raise ValueError(
            f"{no_vote.size} sample(s) have no vote at all, at rows "
            f"{_format_list(no_vote)}. Every sample needs at least one vote; "
            "drop these samples."
        )
    if classes is None:
        try:
            classes, cols = np.unique(values, return_inverse=True)
        except TypeError as exc:
            raise ValueError(
                f"Could not sort the votes ({exc}); pass classes= explicitly."
            ) from exc
        cols = cols.reshape(-1)
        if classes.dtype == object:
            classes = np.asarray(classes.tolist())
    else:
        classes = _check_classes(classes)
        if values.dtype.kind in "iu" and classes.dtype.kind not in "iuf":
            cols = values.astype(np.intp)
            bad = (cols < 0) | (cols >= classes.size)
            if np.any(bad):
                raise ValueError(
                    f"Integer votes are read as column indices into classes "
                    f"(0..{classes.size - 1}), but got {_format_list(np.unique(cols[bad]))}."
                )
        else:
            cols = _label_positions(values, classes, what="votes")
    rows = np.nonzero(~missing)[0]
    Y = np.zeros((V.shape[0], classes.size), dtype=np.uint8)
    Y[rows, cols] = 1
    return Y, classes


def candidate_stats(Y, y_true=None, classes=None):
    """Summarise candidate sets: size, and with true labels, coverage.

    Parameters
    ----------
    Y : array-like
        Candidate sets, in any form :func:`check_candidates` accepts (a 0/1
        matrix, 1-D labels, a list of sets).
    y_true : array-like of shape (n_samples,), default=None
        True labels, elements of ``classes`` (column indices for a matrix
        without ``classes``).
    classes : array-like of shape (n_classes,), default=None
        Class names, as for :func:`check_candidates`.

    Returns
    -------
    stats : dict
        ``n_samples`` (int), ``n_classes`` (int), ``mean_size`` (float, mean
        number of candidates per sample), ``size_counts`` (dict mapping a set
        size to the number of samples with that size) and, with ``y_true``,
        ``coverage`` (float, fraction of sets holding the true label) and
        ``noise_rate`` (float, ``1 - coverage``).

    Examples
    --------
    >>> from sklearn_npll.datasets import candidate_stats
    >>> stats = candidate_stats([[1, 0, 1], [0, 1, 0]], y_true=[2, 0])
    >>> stats["mean_size"], stats["size_counts"], stats["coverage"]
    (1.5, {1: 1, 2: 1}, 0.5)
    """
    Y01, classes = check_candidates(Y, classes=classes)
    sizes = Y01.sum(axis=1, dtype=np.int64)
    values, counts = np.unique(sizes, return_counts=True)
    stats = {
        "n_samples": int(Y01.shape[0]),
        "n_classes": int(Y01.shape[1]),
        "mean_size": float(sizes.mean()),
        "size_counts": {int(v): int(c) for v, c in zip(values, counts)},
    }
    if y_true is not None:
        y_true = np.asarray(_as_numpy(y_true))
        if y_true.ndim != 1 or y_true.size != Y01.shape[0]:
            raise ValueError(
                f"y_true must be a 1-D vector with one label per candidate set "
                f"({Y01.shape[0]}), got shape {y_true.shape}."
            )
        cols = _label_positions(y_true, classes, what="y_true")
        coverage = float(Y01[np.arange(Y01.shape[0]), cols].mean())
        stats["coverage"] = coverage
        stats["noise_rate"] = 1.0 - coverage
    return stats

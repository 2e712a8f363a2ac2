"""Candidate label sets for experiments: synthetic noise, annotator votes, statistics."""

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._data.candidates import _as_numpy, _check_classes, _format_list, _label_positions, check_candidates

__all__ = [
    "make_partial_labels",
    "votes_to_candidates",
    "candidate_stats",
    "AnnotatorPanel",
    "make_annotator_partial_labels",
]


def _numpy_generator(random_state):
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
    codes, C = _label_codes(y, n_classes)
    return _draw_partial_sets(codes, C, q, eta, _numpy_generator(random_state))


def _label_codes(y, n_classes):
    """Column of each label, and the number of columns: ``(codes, C)``."""
    if n_classes is None:
        try:
            _, codes = np.unique(y, return_inverse=True)
        except TypeError as exc:
            raise ValueError(f"Could not sort the labels in y ({exc}).") from exc
        codes = codes.reshape(-1)
        return codes, int(codes.max()) + 1
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
    return y.astype(np.intp), C


def _draw_partial_sets(codes, C, q, eta, rng):
    """The uniform-flipping draw of :func:`make_partial_labels`, as a uint8 matrix."""
    n = codes.size
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
        The class of each column.

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
    V = _check_votes(votes)
    missing, values = _missing_mask(V)
    no_vote = np.flatnonzero(missing.all(axis=1))
    if no_vote.size:
        raise ValueError(
            f"{no_vote.size} sample(s) have no vote at all, at rows "
            f"{_format_list(no_vote)}. Every sample needs at least one vote; "
            "drop these samples."
        )
    classes, cols = _vote_columns(values, classes)
    rows = np.nonzero(~missing)[0]
    Y = np.zeros((V.shape[0], classes.size), dtype=np.uint8)
    Y[rows, cols] = 1
    return Y, classes


def _check_votes(votes):
    """Votes as a non-empty 2-D array ``(n_samples, n_annotators)``."""
    V = np.asarray(_as_numpy(votes))
    if V.ndim == 1:
        V = V[:, None]
    if V.ndim != 2:
        raise ValueError(
            f"votes must be a 2-D array (n_samples, n_annotators), got shape {V.shape}."
        )
    if V.shape[0] == 0 or V.shape[1] == 0:
        raise ValueError(f"votes is empty (shape {V.shape}).")
    return V


def _vote_columns(values, classes):
    """The classes (sorted distinct votes by default) and the column of each
    non-missing vote: ``(classes, cols)``."""
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
        return classes, cols
    classes = _check_classes(classes)
    if values.dtype.kind in "iu" and classes.dtype.kind not in "iuf":
        cols = values.astype(np.intp)
        bad = (cols < 0) | (cols >= classes.size)
        if np.any(bad):
            raise ValueError(
                f"Integer votes are read as column indices into classes "
                f"(0..{classes.size - 1}), but got {_format_list(np.unique(cols[bad]))}."
            )
        return classes, cols
    return classes, _label_positions(values, classes, what="votes")


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


# ---------------------------------------------------------------------------
# A panel of imperfect annotators: instance-dependent candidate sets
# ---------------------------------------------------------------------------


def _default_annotators():
    """The model cycle of :class:`AnnotatorPanel` (imported lazily)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import NearestCentroid
    from sklearn.tree import DecisionTreeClassifier

    return [LogisticRegression(max_iter=1000), GaussianNB(), NearestCentroid(),
            DecisionTreeClassifier(max_depth=4)]


def _annotator_scores(estimator, X):
    """Graded class scores of a fitted classifier, columns in ``classes_``:
    minus the distance to each centroid for centroid models (their
    probabilities divide by a within-class spread that one shot makes 0),
    else the first of log-probabilities, decision function, probabilities
    without NaN, else the one-hot prediction."""
    centroids = getattr(estimator, "centroids_", None)
    if centroids is not None:
        return -np.sqrt(((X[:, None, :] - centroids[None]) ** 2).sum(axis=2))
    for method in ("predict_log_proba", "decision_function", "predict_proba"):
        if hasattr(estimator, method):
            with np.errstate(divide="ignore", invalid="ignore"):
                scores = np.asarray(getattr(estimator, method)(X), dtype=np.float64)
            if scores.ndim == 1:  # binary decision_function
                scores = np.c_[-scores, scores]
            if not np.isnan(scores).any():
                return scores
    pred = estimator.predict(X)
    return (pred[:, None] == estimator.classes_[None, :]).astype(np.float64)


class AnnotatorPanel(ClassifierMixin, BaseEstimator):
    """A panel of weak annotators whose votes make candidate sets.

    A stand-in for a vision-language model's multi-template annotation that
    needs no model download: each annotator is a simple scikit-learn
    classifier (by default logistic regression, Gaussian naive Bayes, nearest
    centroid and a depth-4 tree, cycled) fitted on ``n_shots`` labelled
    examples per class drawn from a pool, and seeing only its own random
    subset of the features (its *feature view*). Every annotator votes for
    its ``top_k`` classes on every sample; the candidate set of a sample is
    the union of all votes (:func:`votes_to_candidates`).

    The noise is instance-dependent, like a VLM's over many templates: the
    annotators agree on easy samples (small, correct sets) and disagree or
    err together on hard ones (larger sets, or sets without the true label).
    Fewer shots and narrower views make sets larger and noisier; more
    annotators make sets larger and less noisy; ``top_k > 1`` makes them
    larger.

    Parameters
    ----------
    n_annotators : int, default=8
        Number of annotators ``m``.
    n_shots : int, default=5
        Labelled examples per class that each annotator is fitted on, drawn
        independently for each annotator from the pool (all of a class's
        examples when the pool holds fewer).
    feature_fraction : float in (0, 1], default=0.5
        Fraction of the features each annotator sees (at least one).
    top_k : int, default=1
        Votes per annotator and sample: its ``top_k`` highest-scored classes.
        Ties are broken by a random class order fixed per annotator at fit.
    estimators : list of scikit-learn classifiers or None, default=None
        The models cycled over the annotators (cloned); None uses the
        default cycle above.
    random_state : int, RandomState instance or None, default=None
        Seeds the shots, the feature views and the models.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, the columns of :meth:`candidates`.
    estimators_ : list of fitted classifiers
        One per annotator.
    feature_views_ : list of ndarray of int
        The feature columns each annotator sees.
    shot_indices_ : list of ndarray of int
        The rows of the pool each annotator was fitted on.
    n_features_in_ : int

    See Also
    --------
    make_annotator_partial_labels : Fit a panel and annotate a training set.
    votes_to_candidates : Turn votes into candidate sets.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_npll import AnnotatorPanel
    >>> X, y = load_digits(return_X_y=True)
    >>> panel = AnnotatorPanel(n_annotators=4, n_shots=3, random_state=0)
    >>> panel = panel.fit(X[:500], y[:500])
    >>> panel.votes(X[500:503]).shape, panel.candidates(X[500:503]).shape
    ((3, 4), (3, 10))
    >>> panel.predict(X[500:503]).shape
    (3,)
    """

    _parameter_constraints = {
        "n_annotators": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_shots": [Interval(numbers.Integral, 1, None, closed="left")],
        "feature_fraction": [Interval(numbers.Real, 0, 1, closed="right")],
        "top_k": [Interval(numbers.Integral, 1, None, closed="left")],
        "estimators": [list, None],
        "random_state": ["random_state"],
    }

    def __init__(self, n_annotators=8, n_shots=5, feature_fraction=0.5, top_k=1,
                 estimators=None, random_state=None):
        self.n_annotators = n_annotators
        self.n_shots = n_shots
        self.feature_fraction = feature_fraction
        self.top_k = top_k
        self.estimators = estimators
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # deliberately weak: each annotator sees a few shots and a feature view
        tags.classifier_tags.poor_score = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit every annotator on its shots and feature view of the pool.

        Parameters
        ----------
        X : array-like of shape (n_pool, n_features)
            The labelled pool; keep it disjoint from the samples to annotate.
        y : array-like of shape (n_pool,)
            Labels of the pool; every class must appear.

        Returns
        -------
        self : AnnotatorPanel
            The fitted panel.
        """
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        C, d = self.classes_.size, X.shape[1]
        if self.top_k > C:
            raise ValueError(f"top_k={self.top_k} exceeds the number of classes ({C}).")
        rng = check_random_state(self.random_state)
        models = _default_annotators() if self.estimators is None else self.estimators
        if not models:
            raise ValueError("estimators is empty; give at least one classifier or None.")
        n_view = max(1, int(round(self.feature_fraction * d)))
        by_class = [np.flatnonzero(codes == c) for c in range(C)]
        self.estimators_, self.feature_views_, self.shot_indices_ = [], [], []
        self._preference_ = []
        for a in range(self.n_annotators):
            shots = np.concatenate([
                rng.choice(rows, size=min(self.n_shots, rows.size), replace=False)
                for rows in by_class])
            view = np.sort(rng.choice(d, size=n_view, replace=False))
            est = clone(models[a % len(models)])
            if "random_state" in est.get_params():
                est.set_params(random_state=int(rng.randint(2**31 - 1)))
            with warnings.catch_warnings():
                # a centroid model warns about zero within-class spread with few
                # shots; its scores here are plain centroid distances
                warnings.filterwarnings("ignore", message=".*within_class_std_dev_",
                                        category=UserWarning)
                # a few shots on raw pixels: lbfgs may stop at max_iter, and a
                # rough annotator is what the panel is for
                warnings.filterwarnings("ignore", category=ConvergenceWarning)
                est.fit(X[np.ix_(shots, view)], codes[shots])
            self.estimators_.append(est)
            self.feature_views_.append(view)
            self.shot_indices_.append(shots)
            self._preference_.append(rng.permutation(C))
        return self

    def vote_indices(self, X):
        """Votes as column indices into ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to annotate, with the pool's features.

        Returns
        -------
        votes : ndarray of shape (n_samples, n_annotators * top_k), dtype=int
            Annotator-major: the ``top_k`` votes of annotator 0 (best
            first), then annotator 1, ...
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        C, k = self.classes_.size, self.top_k
        out = np.empty((X.shape[0], self.n_annotators * k), dtype=np.intp)
        for a, (est, view) in enumerate(zip(self.estimators_, self.feature_views_)):
            scores = np.full((X.shape[0], C), -np.inf)
            scores[:, est.classes_.astype(np.intp)] = _annotator_scores(est, X[:, view])
            rank = np.broadcast_to(self._preference_[a], scores.shape)
            order = np.lexsort((rank, -scores), axis=1)  # by score, then preference
            out[:, a * k:(a + 1) * k] = order[:, :k]
        return out

    def votes(self, X):
        """Every annotator's votes on every sample, as class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to annotate, with the pool's features.

        Returns
        -------
        votes : ndarray of shape (n_samples, n_annotators * top_k)
            Labels from ``classes_``, annotator-major (see
            :meth:`vote_indices`).
        """
        return self.classes_[self.vote_indices(X)]

    def candidates(self, X):
        """Candidate sets: the union of the votes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to annotate, with the pool's features.

        Returns
        -------
        Y : ndarray of shape (n_samples, n_classes), dtype=uint8
            Columns follow ``classes_``; every row holds at least one class.
        """
        Y, _ = votes_to_candidates(self.vote_indices(X),
                                   classes=np.arange(self.classes_.size))
        return Y

    def predict(self, X):
        """Majority vote of the annotators' first choices.

        Ties go to the class with the most votes overall (``top_k`` votes
        included), then to the first class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to annotate, with the pool's features.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Majority-vote labels from ``classes_``.
        """
        votes = self.vote_indices(X)
        C, n = self.classes_.size, votes.shape[0]
        first = np.zeros((n, C))
        every = np.zeros((n, C))
        rows = np.arange(n)
        for j in range(votes.shape[1]):
            every[rows, votes[:, j]] += 1
            if j % self.top_k == 0:
                first[rows, votes[:, j]] += 1
        return self.classes_[np.argmax(first * (votes.shape[1] + 1) + every, axis=1)]


def make_annotator_partial_labels(X, y, X_pool, y_pool, *, n_annotators=8, n_shots=5,
                                  feature_fraction=0.5, top_k=1, estimators=None,
                                  random_state=None):
    """Instance-dependent noisy partial labels from a panel of weak annotators.

    Fits an :class:`AnnotatorPanel` on a labelled pool, lets it vote on
    ``X`` and returns the union of the votes as candidate sets, with their
    realised statistics against the true labels ``y``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Samples to annotate (the training set).
    y : array-like of shape (n_samples,)
        Their true labels, only used for the statistics.
    X_pool : array-like of shape (n_pool, n_features)
        Labelled pool the annotators learn from, disjoint from ``X``.
    y_pool : array-like of shape (n_pool,)
        Labels of the pool; every class must appear.
    n_annotators : int, default=8
        Number of annotators, as in :class:`AnnotatorPanel`.
    n_shots : int, default=5
        Labelled examples per class each annotator learns from.
    feature_fraction : float in (0, 1], default=0.5
        Fraction of the features each annotator sees.
    top_k : int, default=1
        Votes per annotator.
    estimators : list of scikit-learn classifiers or None, default=None
        The annotators' models, as in :class:`AnnotatorPanel`.
    random_state : int, RandomState instance or None, default=None
        Seeds the shots, the feature views and the models.

    Returns
    -------
    Y : ndarray of shape (n_samples, n_classes), dtype=uint8
        Candidate matrix; columns follow ``panel.classes_``.
    stats : dict
        :func:`candidate_stats` of ``Y`` against ``y``: ``mean_size``,
        ``noise_rate``, ``coverage``, ``size_counts``, ...
    panel : AnnotatorPanel
        The fitted panel (its :meth:`~AnnotatorPanel.votes` audit every set).

    Notes
    -----
    Steering the noise. On scikit-learn's ``load_digits`` (64 pixel
    features; a stratified 70/30 split, the 30% as the pool), realised
    statistics over ``random_state`` 0-9, next to the paper's CLIP
    ViT-B/32 sets (mean size 1.39-3.26, noise rate 4.8-61.6%):

    - low noise, ``n_annotators=3, n_shots=5, feature_fraction=0.5``:
      mean size 1.66-1.81, noise rate 5.6-8.8%;
    - high noise, ``n_annotators=3, n_shots=2, feature_fraction=0.08``:
      mean size 2.51-2.62, noise rate 33-43%;
    - ``n_annotators=5, n_shots=5, feature_fraction=0.2``: mean size
      2.78-3.06, noise rate 5.1-10.5%;
    - the defaults (8 annotators, 5 shots, half the features): mean size
      2.94-3.23, noise rate 0.6-2.9%.

    More annotators make sets larger and less noisy (the union covers
    more); fewer shots and narrower feature views make each annotator
    weaker, hence noisier sets. The noise depends on the instance: in the
    low-noise setting the third of the samples that a reference classifier
    finds hardest miss the true label about 20% of the time, the easiest
    third about 1%, and their sets are larger (2.0 against 1.4 classes).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_npll import make_annotator_partial_labels
    >>> X, y = load_digits(return_X_y=True)
    >>> Y, stats, panel = make_annotator_partial_labels(
    ...     X[500:], y[500:], X[:500], y[:500], random_state=0)
    >>> Y.shape, sorted(stats)[:3]
    ((1297, 10), ['coverage', 'mean_size', 'n_classes'])
    """
    panel = AnnotatorPanel(n_annotators=n_annotators, n_shots=n_shots,
                           feature_fraction=feature_fraction, top_k=top_k,
                           estimators=estimators, random_state=random_state)
    Y = panel.fit(X_pool, y_pool).candidates(X)
    return Y, candidate_stats(Y, y_true=y, classes=panel.classes_), panel

"""Cross-validation for candidate sets.

scikit-learn reads a 2-D candidate matrix as multilabel targets and splits
it with unshuffled ``KFold``: on data stored in class order (a folder per
class), each test fold then holds classes its training part never saw, and
every score is 0. :class:`CandidateSetKFold` shuffles and stratifies on the
sets instead.
"""

import warnings

import numpy as np
from sklearn.model_selection import BaseCrossValidator, KFold, StratifiedKFold

from ._data.annotated import AnnotatedImages
from ._data.candidates import _format_list, check_candidates

__all__ = ["CandidateSetKFold"]


class CandidateSetKFold(BaseCrossValidator):
    """K-fold cross-validation for candidate sets, shuffled and stratified.

    Use it as ``cv=`` of ``GridSearchCV``, ``cross_val_score`` or
    ``cross_validate`` with ``y`` a candidate matrix (numpy, sparse,
    DataFrame), a list of sets or 1-D labels, or ``y=None`` with
    :class:`~sklearn_npll.AnnotatedImages` as ``X``. Each sample is
    stratified on one class of its set, its *leading* class:

    1. the candidate most voted for, when ``X`` is an ``AnnotatedImages``
       with ``votes`` (the annotator's templates, or a panel of annotators);
    2. among ties, or without votes, the candidate of highest ``proba``
       (the annotator's probabilities), when ``X`` has them;
    3. among the remaining ties (and for plain 0/1 matrices and sets), the
       candidate held by the fewest sets of the data being split, the first
       column on ties. The rarest class is the one a fold risks losing;
       singleton sets are stratified on their label.

    Without any candidate set (``y=None`` and ``X`` plain images, as in a
    label-free ``Pipeline`` whose annotator runs inside each fold), the
    folds are those of a shuffled ``KFold``.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    shuffle : bool, default=True
        Whether to shuffle each stratum before splitting it into folds. The
        samples of a fold are in their original order either way.
    random_state : int, RandomState instance or None, default=None
        Controls the shuffling (only with ``shuffle=True``). Pass an int for
        the same folds at every call.

    Warns
    -----
    UserWarning
        When a fold's training part holds no candidate set with a class its
        test part holds (a class held by fewer sets than ``n_splits`` cannot
        be in every training part): the model of that fold cannot predict
        it. The warning lists the folds and classes.

    See Also
    --------
    sklearn_npll.metrics.covering_rate_scorer : The label-free score to
        cross-validate with; it warns on such folds whatever the splitter.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll.model_selection import CandidateSetKFold
    >>> Y = np.repeat(np.eye(3, dtype=int), 4, axis=0)  # 12 samples in class order
    >>> Y[::4, 1] = 1                                    # a few sets of two
    >>> cv = CandidateSetKFold(n_splits=2, random_state=0)
    >>> for train, test in cv.split(np.zeros((12, 1)), Y):
    ...     print(Y[train].sum(axis=0), Y[test].sum(axis=0))
    [2 4 2] [2 2 2]
    [2 2 2] [2 4 2]
    """

    def __init__(self, n_splits=5, *, shuffle=True, random_state=None):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits.

        Parameters
        ----------
        X, y, groups : object
            Ignored; present for scikit-learn's API.

        Returns
        -------
        n_splits : int
            ``n_splits``, whatever the data.
        """
        return self.n_splits

    def split(self, X, y=None, groups=None):
        """Generate the indices of each fold's training and test parts.

        Parameters
        ----------
        X : array-like, list of images or paths, Dataset or AnnotatedImages
            The samples; only their number is used, and the candidate sets,
            votes and probabilities of an ``AnnotatedImages`` when ``y`` is
            None.
        y : array-like of shape (n_samples, n_classes) or (n_samples,), list of sets, or None
            Candidate sets (any form the classifiers accept) or labels.
        groups : None
            Ignored (a warning says so when given).

        Yields
        ------
        train : ndarray of shape (n_train,)
            The training part's indices.
        test : ndarray of shape (n_test,)
            The test part's indices.
        """
        if groups is not None:
            warnings.warn("The groups parameter is ignored by CandidateSetKFold.", UserWarning)
        folds = self._folds(X, y)
        yield from folds

    def _folds(self, X, y):
        n = _n_samples(X, y)
        sets = _candidate_sets(X, y, n)
        if sets is None:
            kfold = KFold(self.n_splits, shuffle=self.shuffle, random_state=self.random_state)
            return list(kfold.split(np.zeros((n, 1))))
        Y01, classes, votes, proba = sets
        kfold = StratifiedKFold(self.n_splits, shuffle=self.shuffle,
                                random_state=self.random_state)
        strata = _leading_classes(Y01, votes=votes, proba=proba)
        sizes = np.bincount(strata)
        if sizes.max() < self.n_splits:
            raise ValueError(
                f"n_splits={self.n_splits} is more than the samples of every stratum: at most "
                f"{sizes.max()} samples share a leading class. Lower n_splits.")
        with warnings.catch_warnings():  # rare classes: warned below, by fold
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            folds = list(kfold.split(np.zeros((n, 1)), strata))
        _warn_unlearnable(folds, Y01, classes)
        return folds


def _n_samples(X, y):
    for data in (X, y):
        if data is None:
            continue
        try:
            return len(data)
        except TypeError:
            if getattr(data, "shape", None):
                return int(data.shape[0])
    raise TypeError("CandidateSetKFold.split needs X (or y) with a length.")


def _candidate_sets(X, y, n):
    """``(Y01, classes, votes, proba)`` of the data to split, or None."""
    if y is None:
        if not isinstance(X, AnnotatedImages):
            return None
        return X.candidates, X.classes, X.votes, X.proba
    Y01, classes = check_candidates(y, n_samples=n)
    return Y01, classes, None, None


def _leading_classes(Y01, *, votes=None, proba=None):
    """Each sample's leading class: the column :class:`CandidateSetKFold`
    stratifies it on (most votes, then highest probability, then the rarest
    candidate, then the first column)."""
    n, c = Y01.shape
    keys = []
    if votes is not None:
        votes = np.asarray(votes).reshape(n, -1)
        rows, slots = np.nonzero((votes >= 0) & (votes < c))
        counts = np.zeros((n, c))
        np.add.at(counts, (rows, votes[rows, slots]), 1)
        keys.append(counts)
    if proba is not None:
        keys.append(np.asarray(proba, dtype=np.float64))
    keys.append(np.broadcast_to(-Y01.sum(axis=0, dtype=np.float64), (n, c)))
    keep = Y01 > 0
    for key in keys:
        key = np.where(keep, key, -np.inf)
        keep &= key == key.max(axis=1, keepdims=True)
    return keep.argmax(axis=1)


def _warn_unlearnable(folds, Y01, classes):
    """Warn about folds whose training part lacks a class their test part holds."""
    lines = []
    for i, (train, test) in enumerate(folds):
        lacking = np.flatnonzero((Y01[test].sum(axis=0) > 0) & (Y01[train].sum(axis=0) == 0))
        if lacking.size:
            lines.append(f"fold {i}: {_format_list(np.asarray(classes)[lacking])}")
    if lines:
        warnings.warn(
            f"In {len(lines)} of the {len(folds)} folds, the training part holds no "
            f"candidate set with a class that its test part holds ({'; '.join(lines)}): "
            "these classes are in too few sets to be in every training part, and the "
            "model of that fold cannot predict them. Lower n_splits, or add samples of "
            "these classes.", UserWarning, stacklevel=3)

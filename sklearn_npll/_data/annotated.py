"""The container an annotator hands to a classifier: the images as the
user gave them, their candidate label sets, class names and the votes behind
each set."""

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .candidates import check_candidates
from .inputs import InputData, _as_indices

__all__ = ["AnnotatedImages"]


def _subset_images(images, idx):
    """Select the samples ``idx`` (int64 positions) of any supported image input."""
    if isinstance(images, InputData):
        return images.subset(idx)
    if isinstance(images, np.ndarray):
        return images[idx]
    if isinstance(images, torch.Tensor):
        return images[torch.from_numpy(idx)]
    if isinstance(images, Dataset):
        return Subset(images, idx.tolist())
    if hasattr(images, "iloc"):
        return images.iloc[idx]
    if isinstance(images, (list, tuple)):
        return [images[i] for i in idx]
    return [images[int(i)] for i in idx]


class AnnotatedImages:
    """Images together with their candidate label sets.

    The container an annotator returns from ``transform`` and a classifier
    accepts as ``X`` (with ``y=None``). Indexing with an integer array, a
    boolean mask or a slice returns the corresponding subset, so scikit-learn
    cross-validation can split it.

    The candidate sets may be deferred: given ``annotate`` instead of
    ``candidates``, they are computed on first access of ``candidates``,
    ``votes`` or ``proba``. A fitted annotator's ``transform`` does this, so that a
    ``Pipeline``'s ``predict``, which only needs the images, never runs the
    vision-language model, while its label-free ``score`` does.

    Parameters
    ----------
    images : object
        The images as the user gave them (array, list of paths, dataset, ...);
        not converted.
    candidates : array-like of shape (n_samples, n_classes), default=None
        0/1 candidate matrix (anything :func:`check_candidates` accepts);
        stored as uint8. Required unless ``annotate`` is given.
    classes : array-like of shape (n_classes,)
        Class names, one per column of ``candidates``.
    votes : ndarray of shape (n_samples, n_voters), default=None
        Integer class indices (columns of ``candidates``) voted by each
        template or annotator; -1 marks a missing vote.
    proba : array-like of shape (n_samples, n_classes), default=None
        The annotator's class probabilities (for a vision-language model: the
        mean over templates), rows summing to one: the teacher's soft labels,
        for :class:`~sklearn_npll.DistillationClassifier` or a teacher-aware
        method.
    annotate : callable, default=None
        Called once without arguments when the candidates are first needed;
        returns ``(candidates, votes, proba)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll._data.annotated import AnnotatedImages
    >>> data = AnnotatedImages(np.zeros((3, 8, 8), dtype=np.uint8),
    ...                        [[1, 0], [1, 1], [0, 1]], ["cat", "dog"])
    >>> len(data), data[[0, 2]].candidates.tolist()
    (3, [[1, 0], [0, 1]])
    """

    def __init__(self, images, candidates=None, classes=None, votes=None, proba=None, *,
                 annotate=None):
        if candidates is None and annotate is None:
            raise ValueError("AnnotatedImages needs candidates, or annotate to compute them.")
        self.images = images
        self._annotate = annotate
        self._classes = classes
        self._candidates = self._votes = self._proba = None
        if candidates is not None:
            self._store(candidates, votes, proba)
        elif classes is not None:
            self._classes = np.asarray(classes)

    @property
    def is_annotated(self):
        """Whether the candidate sets exist yet (False while deferred)."""
        return self._candidates is not None

    @property
    def candidates(self):
        """The 0/1 candidate matrix, an ndarray of shape (n_samples, n_classes).

        A deferred annotation runs on first access.
        """
        if self._candidates is None:
            self._store(*self._annotate())
        return self._candidates

    @property
    def votes(self):
        """The votes behind each set, shape (n_samples, n_voters), or None."""
        self.candidates  # noqa: B018 (runs a deferred annotation)
        return self._votes

    @property
    def proba(self):
        """The annotator's class probabilities, shape (n_samples, n_classes), or None."""
        self.candidates  # noqa: B018 (runs a deferred annotation)
        return self._proba

    @property
    def classes(self):
        """The class of each column of ``candidates``, shape (n_classes,)."""
        if self._classes is None:
            self.candidates  # noqa: B018
        return self._classes

    def _store(self, candidates, votes, proba=None):
        self._candidates, self._classes = check_candidates(candidates, classes=self._classes)
        n = self._candidates.shape[0]
        try:
            n_images = len(self.images)
        except TypeError:
            n_images = None
        if n_images is not None and n_images != n:
            raise ValueError(
                f"There are {n_images} images but {n} candidate sets; give one "
                "candidate set per image."
            )
        if votes is not None:
            votes = np.asarray(votes)
            if votes.ndim == 1:
                votes = votes[:, None]
            if votes.ndim != 2 or votes.shape[0] != n:
                raise ValueError(
                    f"votes must have shape ({n}, n_voters), got {votes.shape}."
                )
        self._votes = votes
        self._proba = None if proba is None else _check_proba(proba, self._candidates.shape)

    def __len__(self):
        if self._candidates is None:
            return len(self.images)
        return int(self._candidates.shape[0])

    @property
    def shape(self):
        """Tuple ``(n_samples,)`` followed by the image shape when known."""
        n = len(self)
        shape = getattr(self.images, "shape", None)
        if shape is not None and len(shape) >= 1 and shape[0] == n:
            return (n, *(int(s) for s in shape[1:]))
        return (n,)

    def __getitem__(self, index):
        if isinstance(index, tuple):
            if len(index) == 2 and index[1] is Ellipsis:
                index = index[0]
            else:
                raise IndexError(
                    "AnnotatedImages supports indexing samples only (one index)."
                )
        idx = _as_indices(index, len(self))
        return AnnotatedImages(
            images=_subset_images(self.images, idx),
            candidates=self.candidates[idx],
            classes=self.classes,
            votes=None if self.votes is None else self.votes[idx],
            proba=None if self.proba is None else self.proba[idx],
        )

    def __repr__(self):
        if not self.is_annotated:
            return (f"AnnotatedImages(n_samples={len(self)}, not annotated yet, "
                    f"images={type(self.images).__name__})")
        votes = "None" if self.votes is None else f"shape {self.votes.shape}"
        return (
            f"AnnotatedImages(n_samples={len(self)}, "
            f"n_classes={self.classes.size}, images={type(self.images).__name__}, "
            f"votes={votes}, proba={'None' if self.proba is None else 'yes'})"
        )


def _check_proba(proba, shape):
    """Class probabilities as float32, one row per candidate set."""
    proba = np.asarray(proba, dtype=np.float32)
    if proba.shape != shape:
        raise ValueError(f"proba must have shape {shape} (one row per candidate set, one "
                         f"column per class), got {proba.shape}.")
    if not np.isfinite(proba).all() or (proba < 0).any():
        raise ValueError("proba must hold finite, non-negative probabilities.")
    return proba

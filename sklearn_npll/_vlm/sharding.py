"""Sharded annotation: a list of images split into shards, annotated on the
workers of joblib's current backend (Dask, Ray, loky), one model per worker
process, results concatenated in order."""

import warnings

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs, hash as joblib_hash
from sklearn.base import clone

from .._data.annotated import AnnotatedImages
from .._data.reader import ImageReadError, UnreadableImagesWarning, report_unreadable
from .images import SKIPPED

__all__ = ["annotate_sharded"]

# Fitted annotators of this (worker) process, keyed by the hash of their
# parameters: the vision-language model is loaded once per process, not per shard.
_WORKER_ANNOTATORS = {}


def _worker_annotator(annotator, key):
    fitted = _WORKER_ANNOTATORS.get(key)
    if fitted is None:
        _WORKER_ANNOTATORS.clear()  # one model per worker at a time
        fitted = _WORKER_ANNOTATORS[key] = annotator.fit()
    return fitted


def _annotate_shard(annotator, key, images, offset):
    """``(annotation or None, failures)`` of one shard: its unreadable
    images indexed in the whole ``X``, for one report in the caller (a
    worker's error or warning would name shard positions, or be lost)."""
    fitted = _worker_annotator(annotator, key)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreadableImagesWarning)
        try:
            candidates = fitted.annotate(images)
        except ImageReadError as exc:
            return None, [(i + offset, name, why) for i, name, why in exc.failures]
    failures = []
    for w in caught:
        if isinstance(w.message, UnreadableImagesWarning):
            failures += [(i + offset, name, why) for i, name, why in w.message.failures]
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return (candidates, fitted.votes_, fitted.classes_, fitted.proba_), failures


def _shards(n, n_shards):
    bounds = np.linspace(0, n, n_shards + 1).round().astype(int)
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def annotate_sharded(annotator, X, *, n_shards=None, n_jobs=-1):
    """Annotate ``X`` in shards on the workers of joblib's active backend.

    Each worker process fits its own copy of ``annotator`` (loads the model
    and encodes the prompts) once, on its first shard, and annotates its
    shards with the annotator's public :meth:`annotate`; the shards' candidate
    sets, votes and probabilities are concatenated in the order of ``X``. Choose the
    workers with joblib: ``joblib.parallel_config(backend="dask")`` (inside
    a ``distributed.Client``), ``backend="ray"`` (after
    ``ray.util.joblib.register_ray()``), or the default loky processes.

    With ``cache_dir`` set, every worker adds its embeddings to that
    directory; it is a set of immutable shard files that any number of
    processes write without locks, so when the directory is shared by the
    workers (one machine, or a network file system) the merged cache serves
    every later annotation, in any process.

    Parameters
    ----------
    annotator : VLMPartialAnnotator
        Fitted or not; an unfitted clone with its parameters is sent to the
        workers (an injected ``model`` travels with it).
    X : list of paths or images, or array of images
        Anything the annotator accepts that supports slicing (``X[a:b]``).
    n_shards : int, default=None
        Number of shards; None uses four per worker (for load balance).
    n_jobs : int, default=-1
        Workers to use, as in :class:`joblib.Parallel`; -1 uses all the
        workers of the backend.

    Returns
    -------
    annotated : AnnotatedImages
        ``images`` (``X``), ``candidates``, ``classes``, ``votes`` and
        ``proba``, equal to ``annotator.fit().transform(X)`` in a single
        process. Unreadable images of every shard are reported together,
        indexed in ``X``, as the annotator's ``on_bad_image`` says.

    Examples
    --------
    >>> from joblib import parallel_config
    >>> from sklearn_npll import VLMPartialAnnotator
    >>> from sklearn_npll.distributed import annotate_sharded
    >>> annotator = VLMPartialAnnotator(["cat", "dog"], cache_dir="emb")  # doctest: +SKIP
    >>> with parallel_config(backend="dask"):  # inside a distributed.Client  # doctest: +SKIP
    ...     annotated = annotate_sharded(annotator, files)
    """
    n = len(X)
    if n == 0:
        raise ValueError("annotate_sharded needs at least one image; got an empty X.")
    template = clone(annotator)
    key = joblib_hash(template)
    if n_shards is None:
        n_shards = 4 * max(1, effective_n_jobs(n_jobs))
    shards = _shards(n, min(int(n_shards), n))
    done = Parallel(n_jobs=n_jobs)(
        delayed(_annotate_shard)(template, key, X[a:b], a) for a, b in shards)
    failures = [failure for _, found in done for failure in found]
    if failures:  # every shard's, with indices in X
        report_unreadable(failures, n, "raise" if any(r is None for r, _ in done) else "skip",
                          "images", skipped=SKIPPED)
    results = [r for r, _ in done]
    candidates = np.concatenate([r[0] for r in results])
    votes = np.concatenate([r[1] for r in results])
    proba = np.concatenate([r[3] for r in results])
    return AnnotatedImages(X, candidates, results[0][2], votes, proba)

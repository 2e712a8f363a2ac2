"""Beyond one machine: scikit-learn searches and sharded annotation on a Dask
or Ray cluster through joblib's backends (see the distributed docs page for
multi-GPU and multi-node training with ``torchrun``)."""

from contextlib import contextmanager

import joblib
import numpy as np

from ._vlm.sharding import annotate_sharded

__all__ = ["annotate_sharded", "cluster_backend"]


def _ray_get(ref):
    import ray

    return ray.get(ref)


class RayShared:
    """An array in Ray's object store that pickles as a reference.

    Sent to a worker with a task, it carries only its object reference; the
    worker reads the array from its node's object store (shipped to a node
    once, then shared by the node's workers). Indexing, ``len`` and
    ``numpy.asarray`` (a writable copy) read through to the array, so scikit-learn's searches
    and cross-validation split it like the array itself.

    Parameters
    ----------
    data : array-like
        The array (anything :func:`numpy.asarray` accepts).
    """

    def __init__(self, data):
        import ray

        data = np.asarray(data)
        self.ref = ray.put(data)
        self.shape, self.dtype = data.shape, data.dtype

    @property
    def ndim(self):
        return len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        return _ray_get(self.ref)[key]

    def __array__(self, dtype=None, copy=None):
        # the object store's arrays are read-only; torch wants writable ones
        return np.array(_ray_get(self.ref), dtype=dtype, copy=True)


@contextmanager
def cluster_backend(engine, *, scatter=()):
    """Run joblib-parallel work on a Dask or Ray cluster, shipping data once.

    The work is what joblib runs in parallel (``GridSearchCV(n_jobs=-1)``,
    ``cross_validate``, :func:`annotate_sharded`); the given data go to the
    workers once rather than with every task.

    Parameters
    ----------
    engine : {"dask", "ray"}
        ``"dask"`` needs a ``distributed.Client`` connected to the cluster
        (``Client()`` starts a local one); ``"ray"`` needs ``ray.init()``
        (local, or ``address=`` of a cluster).
    scatter : sequence of arrays, default=()
        Training data to place on the cluster once (Dask: scattered to the
        workers; Ray: put in the object store).

    Yields
    ------
    data : list
        The objects to pass to ``fit`` in place of ``scatter`` (Dask: the
        same objects, which joblib recognises; Ray: :class:`RayShared`
        references).

    Examples
    --------
    >>> from distributed import Client  # doctest: +SKIP
    >>> client = Client(n_workers=2, threads_per_worker=1)  # doctest: +SKIP
    >>> search = GridSearchCV(CoRegClassifier(), grid, n_jobs=-1)  # doctest: +SKIP
    >>> with cluster_backend("dask", scatter=[X, Y]) as (Xs, Ys):  # doctest: +SKIP
    ...     search.fit(Xs, Ys)
    """
    scatter = list(scatter)
    if engine == "dask":
        with joblib.parallel_config(backend="dask", scatter=scatter or None):
            yield scatter
    elif engine == "ray":
        from ray.util.joblib import register_ray

        register_ray()
        shared = [RayShared(data) for data in scatter]
        with joblib.parallel_config(backend="ray"):
            yield shared
    else:
        raise ValueError(f"engine must be 'dask' or 'ray'; got {engine!r}.")

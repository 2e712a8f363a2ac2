"""The threads of a fit: the count torch is set to, held for the whole fit and
recorded on the estimator as ``n_threads_``.

On the CPU, a fit's result depends on the number of threads that ran it:
reductions (batch-norm statistics, matrix products over a long inner
dimension, ...) are split between threads and their partial sums added in
another grouping. An OpenMP runtime with dynamic adjustment on
(``OMP_DYNAMIC=true``) may run a parallel region on fewer threads than it was
set to; GNU libgomp, torch's runtime on Linux, subtracts the 15-minute load
average from the number of CPUs. ``torch.get_num_threads()`` still reports
the count that was set, so the same seed silently gives another model on a
busy machine. Inside :func:`fixed_threads` dynamic adjustment is off, so every
parallel region runs on the count that is recorded.
"""

import contextlib
import functools

import torch
from threadpoolctl import ThreadpoolController

__all__ = ["fixed_threads", "with_fixed_threads"]


def _openmp_runtimes():
    """ctypes handles of the OpenMP runtimes loaded in this process (torch's,
    scikit-learn's, ...), found by threadpoolctl."""
    controllers = ThreadpoolController().select(user_api="openmp").lib_controllers
    return [controller.dynlib for controller in controllers]


@contextlib.contextmanager
def fixed_threads():
    """Run the body with OpenMP's dynamic adjustment of thread counts off.

    Every OpenMP runtime loaded in the process is switched for the calling
    thread (the setting is per thread) and restored on exit.

    Yields
    ------
    n_threads : int
        The number of intra-op threads torch runs its parallel regions on,
        ``torch.get_num_threads()``.
    """
    runtimes = _openmp_runtimes()
    previous = [runtime.omp_get_dynamic() for runtime in runtimes]
    for runtime in runtimes:
        runtime.omp_set_dynamic(0)
    try:
        yield torch.get_num_threads()
    finally:
        for runtime, flag in zip(runtimes, previous):
            runtime.omp_set_dynamic(flag)


def with_fixed_threads(method):
    """Decorate the training method every fit runs through: it runs in
    :func:`fixed_threads`, and once it has returned, the estimator's
    ``n_threads_`` is the thread count it ran on."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with fixed_threads() as n_threads:
            result = method(self, *args, **kwargs)
        self.n_threads_ = n_threads
        return result

    return wrapper

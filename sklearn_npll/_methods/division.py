"""Division of the training set into a trusted partial-label split and an
unlabeled split, from a two-component Gaussian mixture on per-sample losses."""

import numpy as np
from sklearn.mixture import GaussianMixture

__all__ = ["trust_probabilities", "class_trust_probabilities"]


def trust_probabilities(losses, *, random_state=None, max_iter=10, tol=1e-2,
                        reg_covar=5e-4):
    """Posterior probability that each sample belongs to the low-loss mode.

    Fits a two-component 1-D Gaussian mixture on ``losses`` and returns, for
    every sample, the posterior of the component with the smaller mean.

    Parameters
    ----------
    losses : array-like of shape (n_samples,)
        Normalised (and history-averaged) division losses.
    random_state : int, RandomState instance or None
        Seeds the mixture's initialisation.
    max_iter, tol, reg_covar
        Passed to :class:`sklearn.mixture.GaussianMixture` (the reference's
        values are the defaults).

    Returns
    -------
    w : ndarray of shape (n_samples,)
        Trust probabilities in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> losses = np.r_[np.full(50, 0.05), np.full(10, 0.9)]
    >>> w = trust_probabilities(losses, random_state=0)
    >>> bool(w[:50].min() > 0.5 > w[50:].max())
    True
    """
    losses = np.asarray(losses, dtype=np.float64).reshape(-1, 1)
    if losses.shape[0] < 2 or np.ptp(losses) == 0:
        # A mixture cannot separate identical losses: nothing looks noisy.
        return np.ones(losses.shape[0])
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol,
                          reg_covar=reg_covar, random_state=random_state)
    gmm.fit(losses)
    posterior = gmm.predict_proba(losses)
    return posterior[:, int(np.argmin(gmm.means_.ravel()))]


def class_trust_probabilities(losses, labels, *, random_state=None, **mixture_params):
    """Trust probabilities from one mixture per class.

    Samples are grouped by ``labels`` and :func:`trust_probabilities` is
    fitted on each group's losses on its own, so that a class whose losses
    are all high (a class the network has not learned yet) still keeps its
    lowest-loss samples. A group of one sample or of identical losses is
    trusted entirely (as in :func:`trust_probabilities`).

    Parameters
    ----------
    losses : array-like of shape (n_samples,)
        Normalised (and history-averaged) division losses.
    labels : array-like of shape (n_samples,)
        Class of each sample (in Co-Reg: the best candidate of the aligned
        prediction, the class its division loss is computed on).
    random_state : int, RandomState instance or None
        Seeds the mixtures' initialisation.
    **mixture_params
        ``max_iter``, ``tol``, ``reg_covar`` of :func:`trust_probabilities`.

    Returns
    -------
    w : ndarray of shape (n_samples,)

    Examples
    --------
    >>> import numpy as np
    >>> losses = np.r_[np.full(20, 0.1), np.full(5, 0.4), np.full(20, 0.8), np.full(5, 1.0)]
    >>> labels = np.r_[np.zeros(25, int), np.ones(25, int)]
    >>> w = class_trust_probabilities(losses, labels, random_state=0)
    >>> bool(w[20:25].max() < 0.5 < w[25:45].min() and w[45:].max() < 0.5)
    True
    """
    losses = np.asarray(losses, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    w = np.ones(len(losses))
    for c in np.unique(labels):
        group = labels == c
        w[group] = trust_probabilities(losses[group], random_state=random_state,
                                       **mixture_params)
    return w
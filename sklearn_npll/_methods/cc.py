"""CC (Feng et al., NeurIPS 2020): the classifier-consistent partial-label
loss and its trainer."""

import torch
from torch.nn import functional as F

from .one_network import OneNetworkTrainer

__all__ = ["CCTrainer", "cc_loss"]


def cc_loss(logits, Y):
    """Classifier-consistent loss ``mean_i -log(sum_{j in S_i} p_ij)``.

    Computed as ``logsumexp`` of the log-probabilities over the candidates,
    so it needs no ``eps`` and stays finite when the set's mass is tiny.
    Unlike :func:`~sklearn_npll._methods.label_math.partial_cross_entropy`,
    rows whose set holds every class are not excluded: they contribute 0 to
    the sum and count in the mean, as in the reference code.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, C)
        Network outputs before the softmax.
    Y : torch.Tensor of shape (n, C)
        0/1 candidate matrix; every row non-empty.

    Returns
    -------
    loss : torch.Tensor
        Scalar tensor.

    Examples
    --------
    >>> import torch
    >>> logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]))
    >>> Y = torch.tensor([[1, 1, 0], [1, 1, 1]])
    >>> round(cc_loss(logits, Y).item(), 4)  # (-log(0.75) - log(1)) / 2
    0.1438
    """
    log_p = F.log_softmax(logits, dim=1)
    masked = log_p.masked_fill(Y.to(log_p.device) <= 0, float("-inf"))
    return -torch.logsumexp(masked, dim=1).mean()


class CCTrainer(OneNetworkTrainer):
    """The CC loss on each batch's candidate rows."""

    def batch_loss(self, logits, rows):
        return cc_loss(logits, self.ctx.Y[rows])

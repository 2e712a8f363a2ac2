"""PRODEN (Lv et al., ICML 2020): progressive identification of the true
labels, as a loss, a per-sample state and a trainer."""

import torch
from torch import nn
from torch.nn import functional as F

from . import label_math as lm
from .one_network import OneNetworkTrainer

__all__ = ["PRODENState", "PRODENTrainer", "proden_loss"]


def proden_loss(logits, weights):
    """PRODEN's weighted cross-entropy ``mean_i -sum_j w_ij log p_ij``.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, C)
        Network outputs before the softmax.
    weights : torch.Tensor of shape (n, C)
        Per-sample label weights, on the simplex and zero outside the
        candidate set.

    Returns
    -------
    loss : torch.Tensor
        Scalar tensor.

    Examples
    --------
    >>> import torch
    >>> logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    >>> round(proden_loss(logits, torch.tensor([[0.5, 0.5, 0.0]])).item(), 4)
    1.0397
    """
    weights = weights.to(dtype=logits.dtype, device=logits.device)
    return -(weights * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class PRODENState(nn.Module):
    """PRODEN's per-sample label weights, kept as a buffer so that
    checkpoints carry them.

    Parameters
    ----------
    n_samples : int
    n_classes : int

    Attributes
    ----------
    weights : torch.Tensor of shape (n_samples, n_classes)
        Uniform over each candidate set once :meth:`start` has run.
    started : torch.Tensor (bool scalar)
        Whether the weights have been initialised from the candidate sets.
    """

    def __init__(self, n_samples, n_classes):
        super().__init__()
        self.register_buffer("weights", torch.zeros(n_samples, n_classes))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def start(self, Y):
        """Set the weights uniform over the candidates, unless already set
        (a warm start or a loaded checkpoint keeps its weights)."""
        if not bool(self.started):
            self.weights.copy_(lm.restrict_to_candidates(Y, torch.ones_like(Y)))
            self.started.fill_(True)

    @torch.no_grad()
    def update(self, rows, Y, probs):
        """``w_i <- normalise(Y_i * p_i)`` for the given rows."""
        self.weights[rows] = lm.restrict_to_candidates(Y, probs).to(self.weights.dtype)


class PRODENTrainer(OneNetworkTrainer):
    """Weighted cross-entropy on ``proden_state_.weights``; after each step
    the batch's weights become its predictions restricted to the candidates."""

    def begin_epoch(self):
        self.estimator.proden_state_.start(self.ctx.Y)

    def batch_loss(self, logits, rows):
        return proden_loss(logits, self.estimator.proden_state_.weights[rows])

    def after_step(self, logits, rows):
        self.estimator.proden_state_.update(rows, self.ctx.Y[rows],
                                            torch.softmax(logits.float(), dim=1))

    def epoch_terms(self):
        rows = torch.as_tensor(self.rows, device=self.ctx.device)
        weights = self.estimator.proden_state_.weights[rows]
        return {"mean_max_weight": float(weights.max(dim=1).values.mean())}

"""Knowledge distillation (Hinton et al., 2015): a student trained on a
teacher's class probabilities, soft or as its top-1 class."""

import torch
from torch.nn import functional as F

from .label_math import mixed_cross_entropy
from .one_network import OneNetworkTrainer

__all__ = ["DistillationTrainer", "distillation_targets", "soft_target_cross_entropy"]


def distillation_targets(proba, *, targets="soft", temperature=1.0, label_smoothing=0.0):
    """The per-sample targets a student learns from a teacher's probabilities.

    Parameters
    ----------
    proba : torch.Tensor of shape (n, C)
        The teacher's class probabilities, rows summing to one.
    targets : {"soft", "top1"}, default="soft"
        "soft": the probabilities at ``temperature``
        (``normalise(proba ** (1 / temperature))``, which is the softmax of
        the teacher's logits divided by ``temperature``); "top1": the one-hot
        top-1 class.
    temperature : float, default=1.0
        Softening (> 1) or sharpening (< 1) of soft targets.
    label_smoothing : float, default=0.0
        Mix with the uniform distribution: ``(1 - e) t + e / C``.

    Returns
    -------
    targets : torch.Tensor of shape (n, C)

    Examples
    --------
    >>> import torch
    >>> p = torch.tensor([[0.8, 0.2]])
    >>> distillation_targets(p, temperature=2.0)
    tensor([[0.6667, 0.3333]])
    >>> distillation_targets(p, targets="top1", label_smoothing=0.1)
    tensor([[0.9500, 0.0500]])
    """
    if targets == "top1":
        t = F.one_hot(proba.argmax(1), proba.shape[1]).to(proba.dtype)
    else:
        t = torch.softmax(proba.clamp_min(1e-12).log() / temperature, dim=1)
    return (1 - label_smoothing) * t + label_smoothing / proba.shape[1]


def soft_target_cross_entropy(logits, targets, temperature=1.0):
    """Cross-entropy of soft targets, scaled as in distillation.

    ``T^2 * mean_i -sum_j t_ij log softmax(z_i / T)_j``: the factor ``T^2``
    keeps the gradient's scale independent of the temperature ``T``.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, C)
        The student's outputs before the softmax.
    targets : torch.Tensor of shape (n, C)
        Target distributions (rows summing to one).
    temperature : float, default=1.0

    Returns
    -------
    loss : torch.Tensor
        Scalar tensor.

    Examples
    --------
    >>> import torch
    >>> logits = torch.log(torch.tensor([[0.5, 0.5]]))
    >>> round(soft_target_cross_entropy(logits, torch.tensor([[1.0, 0.0]])).item(), 4)
    0.6931
    """
    return temperature ** 2 * mixed_cross_entropy(logits / temperature, targets.to(logits))


class DistillationTrainer(OneNetworkTrainer):
    """The student's epochs: cross-entropy against the teacher's targets."""

    def __init__(self, estimator, ctx):
        super().__init__(estimator, ctx)
        est = estimator
        self.targets = distillation_targets(
            ctx.soft_targets, targets=est.targets, temperature=est.temperature,
            label_smoothing=est.label_smoothing)
        # the student's logits meet soft targets at the same temperature
        self.temperature = est.temperature if est.targets == "soft" else 1.0

    def batch_loss(self, logits, rows):
        return soft_target_cross_entropy(logits, self.targets[rows], self.temperature)

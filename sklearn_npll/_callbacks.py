"""skorch callbacks used by the partial-label estimators."""

import math

from skorch.callbacks import Callback

__all__ = ["CosineLR"]


class CosineLR(Callback):
    """Per-epoch cosine learning-rate schedule applied to every optimizer.

    At the start of epoch ``e`` (counted from 0) each optimizer of the net gets
    ``lr_e = lr_min + (lr - lr_min) * (1 + cos(pi * e / E)) / 2`` with
    ``lr_min = lr * min_factor`` and ``E = net.cosine_epochs`` when set, else
    ``net.max_epochs``. skorch's ``LRScheduler`` drives only ``optimizer_``;
    Co-Reg has one optimizer per network, hence this callback.

    Parameters
    ----------
    min_factor : float, default=1e-3
        ``lr_min / lr``.
    """

    def __init__(self, min_factor=1e-3):
        self.min_factor = min_factor

    def learning_rate(self, net, epoch):
        """The learning rate of ``epoch`` for ``net``."""
        total = getattr(net, "cosine_epochs", None) or net.max_epochs
        lr_min = net.lr * self.min_factor
        return lr_min + (net.lr - lr_min) * (1 + math.cos(math.pi * epoch / total)) / 2

    def on_epoch_begin(self, net, **kwargs):
        epoch = len(net.history) - 1  # skorch has already opened this epoch's row
        lr = self.learning_rate(net, epoch)
        for name in net._optimizers:
            for group in getattr(net, name + "_").param_groups:
                group["lr"] = lr
        net.history.record("lr", lr)

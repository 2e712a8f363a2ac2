"""Learning-rate schedules: the estimators' default cosine, continued without a jump."""

import math

import torch
from skorch.callbacks import LRScheduler

__all__ = ["CosineAnnealingToEnd", "CosineLR"]


class CosineAnnealingToEnd(torch.optim.lr_scheduler.LRScheduler):
    """Cosine annealing to ``min_factor * initial_lr`` at ``total_epochs``,
    continued without a jump when ``total_epochs`` is raised.

    Each parameter group holds a plan ``(start, start_lr, end)`` (keys
    ``cosine_start``, ``cosine_start_lr``, ``cosine_end``; saved with the
    optimizer's state):
    ``lr_e = lr_min + (start_lr - lr_min) * (1 + cos(pi * (e - start) / (end - start))) / 2``
    for ``e < end`` and ``lr_min`` from ``end`` on. A fresh schedule plans
    ``(0, initial_lr, total_epochs)``: the usual cosine. When the scheduler
    is built again to continue training (``last_epoch >= 0``) with another
    ``total_epochs``, the plan is redrawn from the last finished epoch
    ``a = last_epoch`` and its learning rate ``lr_a``: ``(a, lr_a, total_epochs)``.
    The learning rate then keeps falling from where it was to ``lr_min`` over
    the added epochs instead of jumping back up. With an unchanged
    ``total_epochs`` the plan is kept, so a resumed run follows exactly the
    schedule of an uninterrupted one.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    total_epochs : int
        Epoch at which the learning rate reaches its minimum.
    min_factor : float, default=1e-3
        ``lr_min / initial_lr``.
    last_epoch : int, default=-1
        Index of the last finished epoch (-1: none), as in torch's schedulers.

    Examples
    --------
    >>> import torch
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = CosineAnnealingToEnd(opt, total_epochs=4)
    >>> lrs = []
    >>> for epoch in range(4):
    ...     lrs.append(round(opt.param_groups[0]["lr"], 3))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [1.0, 0.854, 0.5, 0.147]
    """

    def __init__(self, optimizer, total_epochs, min_factor=1e-3, last_epoch=-1):
        self.total_epochs = int(total_epochs)
        self.min_factor = min_factor
        for group in optimizer.param_groups:
            if last_epoch < 0 or "cosine_end" not in group:
                group.update(cosine_start=0, cosine_end=self.total_epochs,
                             cosine_start_lr=group.get("initial_lr", group["lr"]))
            elif group["cosine_end"] != self.total_epochs:
                start_lr = self._planned_lr(group, last_epoch)
                group.update(cosine_start=last_epoch, cosine_end=self.total_epochs,
                             cosine_start_lr=start_lr)
        super().__init__(optimizer, last_epoch)

    def _planned_lr(self, group, epoch):
        lr_min = self.min_factor * group.get("initial_lr", group["cosine_start_lr"])
        start, end = group["cosine_start"], group["cosine_end"]
        if epoch >= end:
            return lr_min
        t = (epoch - start) / (end - start)
        return lr_min + (group["cosine_start_lr"] - lr_min) * (1 + math.cos(math.pi * t)) / 2

    def get_lr(self):
        return [self._planned_lr(group, self.last_epoch) for group in self.optimizer.param_groups]


class CosineLR(LRScheduler):
    """The estimators' default learning-rate schedule, a skorch ``LRScheduler``.

    It runs :class:`CosineAnnealingToEnd` over ``net.cosine_epochs`` epochs
    (``net.max_epochs`` when None).

    The estimators have one optimizer (``optimizer_``) with one parameter
    group per network, so this schedule, like any skorch ``LRScheduler``
    passed in ``callbacks`` in its place, drives every network alike. The
    learning rate of each epoch is recorded in the history as ``lr``.
    Raising ``max_epochs`` and training on (``warm_start=True``,
    ``partial_fit`` or a resumed checkpoint) continues the cosine from the
    last learning rate down to the minimum at the new ``max_epochs``.

    Parameters
    ----------
    min_factor : float, default=1e-3
        ``lr_min / lr``.
    event_name : str, default="lr"
        History key of the learning rate of each epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll import CCClassifier
    >>> from sklearn_npll.callbacks import CosineLR
    >>> X = np.random.RandomState(0).normal(size=(20, 3)).astype("float32")
    >>> clf = CCClassifier(max_epochs=3, batch_size=8, lr=0.1, random_state=0,
    ...                    callbacks=[("lr_schedule", CosineLR(min_factor=0.1))])
    >>> [round(lr, 4) for lr in clf.fit(X, np.arange(20) % 2).history_[:, "lr"]]
    [0.1, 0.0775, 0.0325]
    """

    def __init__(self, min_factor=1e-3, event_name="lr"):
        super().__init__(policy=CosineAnnealingToEnd, monitor=None, event_name=event_name,
                         step_every="epoch")
        self.min_factor = min_factor

    @property
    def kwargs(self):
        return {"total_epochs": self.total_epochs_, "min_factor": self.min_factor}

    def on_train_begin(self, net, **kwargs):
        self.total_epochs_ = net.cosine_epochs or net.max_epochs
        super().on_train_begin(net, **kwargs)

    def __getstate__(self):
        # the torch scheduler refers to the optimizer, which the net pickles
        # itself; it is built again at the start of the next training
        state = dict(self.__dict__)
        state["lr_scheduler_"] = None
        return state

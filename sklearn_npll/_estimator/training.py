"""What every method's trainer does: the batches of an epoch, one
optimisation step told to skorch's callbacks, divergence checks, the mean of
the logged loss terms."""

import numpy as np
import torch
from skorch.callbacks import ProgressBar
from skorch.utils import TeeGenerator

from . import data_parallel

__all__ = ["Trainer", "mean_terms"]


def mean_terms(steps):
    """Average the loss terms of an epoch's steps.

    Parameters
    ----------
    steps : iterable of dict
        ``{term name: float}`` per step; a term may be missing from a step
        (it is averaged over the steps that have it).

    Returns
    -------
    means : dict
        ``{term name: mean value}``, in order of first appearance.
    n_steps : int

    Examples
    --------
    >>> mean_terms([{"a": 1.0, "b": 2.0}, {"a": 3.0}])
    ({'a': 2.0, 'b': 2.0}, 2)
    """
    sums, counts, n_steps = {}, {}, 0
    for terms in steps:
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value)
            counts[name] = counts.get(name, 0) + 1
        n_steps += 1
    return {name: total / counts[name] for name, total in sums.items()}, n_steps


class Trainer:
    """The training loop of one method for one call of ``fit``.

    The estimator hands each epoch to its trainer, the way scikit-learn's
    linear models hand a fit to a solver object: the estimator keeps the
    parameters, the networks (``module_``, ...), the optimizer, the history
    and the callbacks; the trainer runs the epochs on the fit's data and
    keeps what one fit needs (divisions, warnings already given, ...).
    Subclasses write :meth:`run_epoch`.

    Parameters
    ----------
    estimator : PartialLabelNet
        The estimator being fitted.
    ctx : FitContext
        The fit's data, candidate matrix, device, generators and augmenters.
    """

    def __init__(self, estimator, ctx):
        self.estimator, self.ctx = estimator, ctx
        #: The training rows of each step of the current epoch, in order.
        self.trained_rows = []

    def run_epoch(self, epoch):
        """Train one epoch (0-based ``epoch``); return ``{term: mean value}``."""
        raise NotImplementedError

    @property
    def rows(self):
        """Indices of the training rows (all, less a validation hold-out)."""
        ctx = self.ctx
        return np.arange(len(ctx.data)) if ctx.train_rows is None else ctx.train_rows

    def batches(self, rows, batch_size):
        """Consecutive chunks of a random permutation of ``rows`` (this rank's
        part of each under data-parallel training)."""
        est = self.estimator
        rows = np.asarray(rows)[self.ctx.rng.permutation(len(rows))]
        chunks = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        if len(chunks) > 1 and len(chunks[-1]) < 2 * data_parallel.world(est)[0]:
            # batch norm cannot train on a single sample (on any rank)
            chunks[-2:] = [np.concatenate(chunks[-2:])]
        return data_parallel.local_batches(est, chunks)

    def cycle(self, rows, batch_size):
        """Endless stream of batches over ``rows``, reshuffled each pass."""
        while True:
            yield from self.batches(rows, batch_size)

    @staticmethod
    def n_batches(n_rows, batch_size):
        """Number of chunks :meth:`batches` cuts ``n_rows`` rows into."""
        n = -(-n_rows // batch_size)
        return n - 1 if n > 1 and n_rows % batch_size == 1 else n

    def announce(self, n_steps):
        """Tell progress bars how many batches this epoch runs: ``n_steps``
        training steps plus the validation batches (skorch's ``ProgressBar``
        estimates the total from the data size before the epoch, which the
        trainers' own batching does not follow)."""
        est, ctx = self.estimator, self.ctx
        total = n_steps
        if ctx.valid_data is not None:
            total += -(-len(ctx.valid_data) // est.batch_size)
        for _, cb in getattr(est, "callbacks_", []):
            bar = getattr(cb, "pbar_", None) if isinstance(cb, ProgressBar) else None
            if bar is not None:
                bar.total = total
                bar.refresh()

    @staticmethod
    def check_finite(epoch, terms, where=""):
        """Raise ``FloatingPointError`` naming the epoch (``epoch`` is 0-based;
        the message counts from 1, as the history does) and the first term (a
        scalar or a tensor of per-sample values) that is NaN or infinite."""
        values = [torch.as_tensor(v, dtype=torch.float32).detach() for v in terms.values()]
        finite = torch.stack([torch.isfinite(v).all().cpu() for v in values])
        if bool(finite.all()):
            return
        for name, v, ok in zip(terms, values, finite):
            if not ok:
                v = v.reshape(-1)
                raise FloatingPointError(  # epochs counted from 1, as in the history
                    f"Training diverged at epoch {epoch + 1}{where}: the loss term "
                    f"'{name}' is {float(v[~torch.isfinite(v)][0])}. Lower lr, check the "
                    "inputs for extreme values, or normalise features.")

    def step(self, network, loss, batch, y_pred, rows):
        """One optimisation step of ``network`` on ``loss``, told to skorch's
        callbacks as a training batch.

        Sends ``on_batch_begin``; back-propagates (scaled under fp16);
        averages gradients over data-parallel ranks; sends
        ``on_grad_computed`` with ``network``'s trainable parameters (so that
        e.g. ``GradientNormClipping`` clips them); steps ``optimizer_`` (other
        networks' parameters have no gradient and stay unchanged); records
        ``train_loss`` and ``train_batch_size``; sends ``on_batch_end`` with
        ``batch``, ``loss`` and ``y_pred``.

        Parameters
        ----------
        network : nn.Module
            The network that computed ``loss``.
        loss : torch.Tensor
            Scalar loss of the step.
        batch : tuple (X, y)
            The batch's inputs before augmentation and its rows of the
            candidate matrix.
        y_pred : torch.Tensor
            The network's logits for the rows of ``batch``.
        rows : array-like of int
            The batch's training rows, recorded in :attr:`trained_rows` (the
            samples of the split that skorch's scoring callbacks read at the
            end of the epoch, in the order of the predictions they cached).
        """
        est, scaler = self.estimator, self.ctx.grad_scaler
        est.notify("on_batch_begin", batch=batch, training=True)
        est.optimizer_.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
        else:
            # fp16: scaled backward; callbacks see the true (unscaled) gradients
            scaler.scale(loss).backward()
            scaler.unscale_(est.optimizer_)
        loss, n_samples = data_parallel.average_gradients(est, network, loss, len(batch[0]))
        params = ((name, p) for name, p in network.named_parameters() if p.requires_grad)
        est.notify("on_grad_computed", named_parameters=TeeGenerator(params),
                   X=batch[0], y=batch[1], training=True)
        if scaler is None:
            est.optimizer_.step()
        else:
            scaler.step(est.optimizer_)  # skipped when a gradient is inf/NaN
            scaler.update()
        loss = loss.detach()
        self.trained_rows.append(np.asarray(torch.as_tensor(rows).cpu()))
        est.history.record_batch("train_loss", float(loss))
        est.history.record_batch("train_batch_size", n_samples)
        est.notify("on_batch_end", batch=batch, training=True, loss=loss,
                   y_pred=y_pred.detach())

    def train_batches(self, epoch, network, batch_size, kind, loss_terms, where=""):
        """One pass of ``network`` over the training rows, a step per batch.

        Parameters
        ----------
        epoch : int
        network : nn.Module
        batch_size : int
        kind : {"weak", "strong", "test"}
            The augmentation of the inputs.
        loss_terms : callable
            ``loss_terms(logits, rows) -> (loss, {term name: tensor})``.
        where : str
            Appended to the epoch in a divergence message.

        Yields
        ------
        logits : torch.Tensor
            The batch's logits (detached).
        rows : torch.Tensor
            The batch's training rows.
        terms : dict
            The step's terms as floats (averaged over data-parallel ranks).
        """
        ctx = self.ctx
        network.train()
        for idx in self.batches(self.rows, batch_size):
            rows = torch.as_tensor(idx, device=ctx.device)
            x = ctx.batch(idx)
            logits = network(ctx.augment(kind, x))
            loss, terms = loss_terms(logits, rows)
            terms = data_parallel.average(self.estimator, terms)
            self.check_finite(epoch, terms, where)
            self.step(network, loss, (x, ctx.Y[rows]), logits, idx)
            yield logits.detach(), rows, terms

"""The fit context: what one call of ``fit`` works with, built once per call
and never stored on the estimator (it holds the training data, generators and
per-fit state that pickles must not carry)."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._data.inputs import InputData, TensorData
from .._runtime import resolve_precision, store_fits_on_device, use_channels_last
from . import data_parallel
from .persistence import set_random_states

__all__ = ["FitContext", "batch_to_device", "keeps_store_on_device", "make_context"]


def batch_to_device(data, indices, device):
    """Rows of ``data`` on ``device``; to CUDA through pinned memory with a
    non-blocking copy (a gather straight into pinned memory for a store)."""
    if device.type != "cuda":
        return data.get_batch(indices)
    if isinstance(data, TensorData):
        idx = torch.as_tensor(np.asarray(indices).reshape(-1), dtype=torch.long)
        out = torch.empty((len(idx), *data.data.shape[1:]), dtype=data.data.dtype,
                          pin_memory=True)
        batch = torch.index_select(data.data, 0, idx, out=out)
    else:
        batch = data.get_batch(indices).pin_memory()
    return batch.to(device, non_blocking=True)


@dataclass
class FitContext:
    """What one call of ``fit`` works with.

    Attributes
    ----------
    data : InputData
        The training samples (the validation hold-out included).
    Y : torch.Tensor of shape (n_samples, n_classes)
        Float candidate matrix on the device.
    device : torch.device
    generator : torch.Generator
        CPU generator for every torch draw (augmentations, MixUp pairs).
    rng : numpy.random.RandomState
        Numpy draws (batch orders, MixUp weights, mixtures).
    augmenters : dict
        ``{"weak", "strong", "test"}`` -> ``aug(batch, generator)``.
    valid_data, valid_Y : InputData and ndarray, or None
        The validation hold-out (``validation_fraction``).
    train_rows : ndarray or None
        The training rows when a hold-out is set (None: every row).
    channels_last : bool
        Whether batches go to convolutional networks in channels_last format.
    device_images : torch.Tensor or None
        The whole training store on the GPU (``device_store``).
    grad_scaler : torch.amp.GradScaler or None
        Loss scaling of fp16 training.
    verified : array-like or None
        The ``verified`` argument of this fit call (Co-Reg).
    soft_targets : torch.Tensor of shape (n_samples, n_classes) or None
        Class probabilities to learn (distillation), on the device.
    trainer : Trainer or None
        The method's training loop for this fit call.
    """

    data: InputData
    Y: torch.Tensor
    device: torch.device
    generator: torch.Generator
    rng: np.random.RandomState
    augmenters: dict
    valid_data: InputData = None
    valid_Y: np.ndarray = None
    train_rows: np.ndarray = None
    channels_last: bool = False
    device_images: torch.Tensor = None
    grad_scaler: Any = None
    verified: Any = None
    soft_targets: torch.Tensor = None
    trainer: Any = None

    def batch(self, indices):
        """Inputs of the given training rows, on the device."""
        if self.device_images is not None:
            x = self.device_images[torch.as_tensor(indices, device=self.device)]
        else:
            x = batch_to_device(self.data, np.asarray(indices), self.device)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def augment(self, kind, x):
        """``x`` through the augmentation ``kind`` with the fit's generator."""
        return self.augmenters[kind](x, self.generator)


def _generators(est):
    """The fit's torch generator and numpy ``RandomState``: the saved states of
    the last finished epoch (a resumed fit equals an uninterrupted one), else
    seeded for the epoch the fit starts at."""
    generator, rng = torch.Generator(), np.random.RandomState()
    snapshot = getattr(est, "_random_states", None)
    if snapshot is not None and snapshot["epoch"] == len(est.history):
        set_random_states(generator, rng, snapshot)
    else:
        generator.manual_seed(est._fit_seed(f"torch{len(est.history)}"))
        rng.seed(est._fit_seed(f"numpy{len(est.history)}"))
    data_parallel.split_generator(est, generator)
    return generator, rng


def _hold_out(est, ctx, Y):
    """Split off the validation hold-out (``validation_fraction``)."""
    n = len(ctx.data)
    n_valid = int(round(est.validation_fraction * n))
    if not 0 < n_valid < n:
        raise ValueError(
            f"validation_fraction={est.validation_fraction} leaves no sample for "
            f"training or validation with {n} samples.")
    order = np.random.RandomState(est._fit_seed("validation")).permutation(n)
    ctx.valid_data = ctx.data.subset(order[:n_valid])
    ctx.valid_Y = Y[order[:n_valid]]
    ctx.train_rows = np.sort(order[n_valid:])


def keeps_store_on_device(est, data, device):
    """Whether the training store goes to the GPU whole (``device_store``)."""
    if est.device_store == "auto":
        nbytes = data.data.element_size() * data.data.nelement()
        return store_fits_on_device(nbytes, device)
    return bool(est.device_store)


def _place_store(est, ctx):
    """On CUDA: the store on the GPU when it fits (``device_store``), and
    channels_last for convolutional networks."""
    data = ctx.data
    if isinstance(data, TensorData) and keeps_store_on_device(est, data, ctx.device):
        ctx.device_images = data.data.to(ctx.device)
    ctx.channels_last = any(use_channels_last(net, ctx.device)
                            for net in est.training_networks())


def _rows_kept(values, data):
    """A per-sample fit argument (``verified``, ``soft_targets``) for the
    samples ``data`` holds (unreadable images skipped at loading)."""
    kept = getattr(data, "source_mask", None)
    if values is None or kept is None or len(values) != len(kept):
        return values  # nothing skipped, or of another length: the method's checks say so
    if isinstance(values, torch.Tensor):
        return values[torch.from_numpy(kept).to(values.device)]
    return np.asarray(values)[kept]


def make_context(est, data, Y, verified=None, soft_targets=None):
    """The :class:`FitContext` of a fit of ``est`` on ``data`` and the 0/1
    candidate matrix ``Y``, with its trainer."""
    verified, soft_targets = _rows_kept(verified, data), _rows_kept(soft_targets, data)
    device = torch.device(est.device_)
    generator, rng = _generators(est)
    ctx = FitContext(data=data, Y=torch.as_tensor(Y, dtype=torch.float32, device=device),
                     device=device, generator=generator, rng=rng,
                     augmenters=est._augmenters(), verified=verified)
    if soft_targets is not None:
        ctx.soft_targets = torch.as_tensor(soft_targets, dtype=torch.float32, device=device)
    if est.validation_fraction:
        _hold_out(est, ctx, Y)
    if device.type == "cuda":
        _place_store(est, ctx)
    if resolve_precision(est.precision, device) == "fp16":
        # loss scaling, for this fit's steps (Trainer.step)
        ctx.grad_scaler = torch.amp.GradScaler(device.type)
    ctx.trainer = est.trainer_class(est, ctx)
    return ctx

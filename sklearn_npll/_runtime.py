"""Where and in what arithmetic the library computes.

One device policy and one precision policy, shared by the classifiers and the
annotator:

- device ``"auto"`` (or None) is CUDA when available, else the CPU;
- precision ``"auto"`` is fp32 on the CPU and, on CUDA, bf16 where the GPU
  supports it, else fp16. bf16 keeps fp32's exponent range, so training needs
  no loss scaling; fp16 training scales the loss (``torch.amp.GradScaler``).
  The annotator only runs forward passes, where both are equally safe, and
  follows the same rule.
"""

import contextlib

import torch
from torch import nn

__all__ = ["AMP_DTYPES", "DEVICE_STORE_SHARE", "autocast", "autocast_encoders",
           "resolve_device", "resolve_precision", "store_fits_on_device",
           "use_channels_last"]

#: The ``torch.autocast`` dtype of each precision (None: no autocast).
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: "auto" keeps the training images on the GPU when they take at most this
#: share of its free memory; otherwise batches travel through pinned memory.
DEVICE_STORE_SHARE = 0.5


def resolve_device(device):
    """The ``torch.device`` that ``device`` names.

    Parameters
    ----------
    device : str, torch.device or None
        "auto" or None: CUDA when available, else the CPU.

    Returns
    -------
    device : torch.device

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision, device):
    """The precision that ``precision`` means on ``device``.

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16", "fp16"}
    device : str or torch.device

    Returns
    -------
    precision : {"fp32", "bf16", "fp16"}
        "auto" is fp32 off CUDA; on CUDA bf16 where supported, else fp16.

    Examples
    --------
    >>> resolve_precision("auto", "cpu")
    'fp32'
    """
    if precision != "auto":
        return precision
    if torch.device(device).type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(precision, device):
    """A context that runs forward passes in ``precision`` (a resolved one)."""
    dtype = AMP_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


class _AutocastHooks:
    """Forward pre-hook and hook that run a module under ``torch.autocast``
    and hand back its output in float32."""

    def __init__(self, device_type, dtype):
        self.device_type, self.dtype, self.active = device_type, dtype, []

    def enter(self, module, args):
        amp = torch.autocast(self.device_type, dtype=self.dtype)
        amp.__enter__()
        self.active.append(amp)

    def exit(self, module, args, output):
        self.active.pop().__exit__(None, None, None)
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            return output.float()
        return output


@contextlib.contextmanager
def autocast_encoders(networks, precision, device):
    """Within this context the children of ``networks`` whose name ends in
    ``encoder`` (the backbones, where the cost is) run under
    ``torch.autocast`` in ``precision`` and return float32, so heads, losses
    and label bookkeeping stay in float32."""
    dtype = AMP_DTYPES[precision]
    if dtype is None:
        yield
        return
    hooks = _AutocastHooks(torch.device(device).type, dtype)
    handles = []
    for network in networks:
        for child_name, child in network.named_children():
            if child_name.endswith("encoder"):
                handles.append(child.register_forward_pre_hook(hooks.enter))
                handles.append(child.register_forward_hook(hooks.exit, always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def store_fits_on_device(nbytes, device, share=DEVICE_STORE_SHARE):
    """Whether ``nbytes`` fit in ``share`` of the free memory of a CUDA device."""
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


def use_channels_last(module, device):
    """channels_last pays on CUDA, for networks with 2-D convolutions."""
    return torch.device(device).type == "cuda" and any(
        isinstance(m, nn.Conv2d) for m in module.modules())

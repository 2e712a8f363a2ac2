"""Batched data augmentation with per-sample random parameters.

Every augmenter is a callable ``aug(batch, generator)``:

- ``batch`` is a tensor of images ``(B, C, H, W)`` (``uint8``, or floating point
  with values in [0, 1]) or of feature vectors ``(B, d)``, on any device;
- ``generator`` is a CPU :class:`torch.Generator`. Every random parameter is drawn
  from it on the CPU, one set per sample, and then moved to the batch's device, so
  a result depends only on the batch and the generator's state, never on the
  caller's global random state or on the device;
- the result is a ``float32`` tensor of the same shape on the batch's device,
  normalised with the dataset's mean and standard deviation.

The work itself is batched on the batch's device (one padded gather for all crops,
one ``grid_sample`` for all geometric operations, and so on), which is what makes
six augmented views per sample per training step affordable. Image augmenters also
have ``sample_params(batch_size, image_size, generator)`` and
``apply(batch, params)``: ``aug(batch, generator)`` is
``aug.apply(batch, aug.sample_params(len(batch), batch.shape[-2:], generator))``.

The operations follow the semantics of :mod:`torchvision.transforms.v2.functional`
on floating point images (nearest interpolation, zero fill); see
:class:`StrongAugment` for the operation pool and its magnitude ranges.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "STRONG_OPS",
    "Normalize",
    "WeakAugment",
    "StrongAugment",
    "FeatureAugment",
    "PerSample",
    "make_augmenters",
    "channel_stats",
    "default_padding",
]

#: The strong augmentation pool: ``name -> (low, high)``. The magnitude of a sample's
#: operation is drawn uniformly in ``[low, high)`` (the ranges of the FixMatch /
#: PiCO ``RandomAugment`` pool used by the Co-Reg reference):
#:
#: - ``brightness``, ``color``, ``contrast``, ``sharpness``: enhancement factor
#:   (1 leaves the image unchanged, 0 gives black / grey / mean-grey / blurred);
#: - ``posterize``: number of bits kept, ``floor`` of the draw, so 4 to 7;
#: - ``rotate``: angle in degrees, counter-clockwise when positive;
#: - ``shear_x``, ``shear_y``: shear factor (``x_in = x_out + s * y_out`` about the
#:   top-left corner, as PIL and torchvision's ``RandAugment`` do);
#: - ``solarize``: threshold on the 0-255 scale; pixels at or above it are inverted;
#: - ``translate_x``, ``translate_y``: shift as a fraction of the image width /
#:   height, truncated to whole pixels;
#: - ``autocontrast``, ``equalize``, ``identity``: no magnitude.
STRONG_OPS = {
    "autocontrast": None,
    "brightness": (0.05, 0.95),
    "color": (0.05, 0.95),
    "contrast": (0.05, 0.95),
    "equalize": None,
    "identity": None,
    "posterize": (4.0, 8.0),
    "rotate": (-30.0, 30.0),
    "sharpness": (0.05, 0.95),
    "shear_x": (-0.3, 0.3),
    "shear_y": (-0.3, 0.3),
    "solarize": (0.0, 256.0),
    "translate_x": (-0.3, 0.3),
    "translate_y": (-0.3, 0.3),
}

_GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")

# Cutout fill of the reference for RGB images, on the 0-255 scale.
_RGB_CUTOUT_FILL = (125, 123, 114)


# --------------------------------------------------------------------------- helpers


def default_padding(image_size):
    """Padding of the random crop for images of a given size.

    ``max(1, round(min(H, W) / 8))``: 4 pixels at 32 pixels and 8 at 64, as in the
    reference; 4 at 28 pixels and 1 at 8 pixels.

    Parameters
    ----------
    image_size : tuple of int
        ``(H, W)``.

    Returns
    -------
    int
        Padding in pixels.

    Examples
    --------
    >>> default_padding((32, 32)), default_padding((64, 64)), default_padding((8, 8))
    (4, 8, 1)
    """
    return max(1, int(round(min(int(s) for s in image_size) / 8)))


def _as_stat(values, name):
    """Turn a mean/std given as None, a number or a sequence into a float tuple."""
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} must be a finite number or a non-empty sequence of finite numbers, "
            f"got {values!r}."
        )
    if name == "std" and np.any(arr <= 0):
        bad = int(np.flatnonzero(arr <= 0)[0])
        raise ValueError(f"std must be positive everywhere, but entry {bad} is {arr[bad]}.")
    return tuple(float(v) for v in arr)


def _check_generator(generator):
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator on the CPU, got {type(generator).__name__}; "
            "create one with torch.Generator().manual_seed(seed)."
        )
    if generator.device.type != "cpu":
        raise ValueError(
            f"generator must live on the CPU (got one on {generator.device}); the parameters "
            "are drawn on the CPU and moved to the batch's device."
        )


def _check_images(batch, name):
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor batch, got {type(batch).__name__}.")
    if batch.ndim != 4:
        raise ValueError(
            f"{name} expects a batch of images of shape (batch, channels, height, width), "
            f"got shape {tuple(batch.shape)}."
        )


def _to_float(batch):
    """uint8 -> float32 in [0, 1]; floating point -> a float32 copy."""
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(255.0)
    if batch.is_floating_point():
        return batch.to(torch.float32, copy=True)
    raise TypeError(f"expected a uint8 or floating point batch, got dtype {batch.dtype}.")


def _stat_tensor(values, n, x, what):
    """Shape (1, n, 1, ...) tensor of mean/std values matching the batch ``x``."""
    if len(values) not in (1, n):
        raise ValueError(
            f"the normalisation {what} has {len(values)} values but the batch of shape "
            f"{tuple(x.shape)} has {n} {'features' if x.ndim == 2 else 'channels'}; give one "
            f"value or {n}."
        )
    t = torch.tensor(values, dtype=torch.float32).to(x.device, non_blocking=True)
    shape = [1, len(values)] + [1] * (x.ndim - 2)
    return t.view(shape)


class _Normalizing:
    """Holds ``mean`` and ``std`` and applies ``(x - mean) / std``."""

    def _init_stats(self, mean, std):
        self.mean = _as_stat(mean, "mean")
        self.std = _as_stat(std, "std")

    def _normalize(self, x):
        """``(x - mean) / std``; works in place on ``x``, which must be a fresh tensor."""
        n = x.shape[1]
        if self.mean is not None:
            x = x.sub_(_stat_tensor(self.mean, n, x, "mean"))
        if self.std is not None:
            x = x.div_(_stat_tensor(self.std, n, x, "std"))
        return x

    def _stats_repr(self):
        return f"mean={self.mean}, std={self.std}"


# --------------------------------------------------------------------------- test


class Normalize(_Normalizing):
    """Test-time transform: scale to [0, 1] and normalise, nothing random.

    Parameters
    ----------
    mean : float or sequence of float or None
        Per-channel (images) or per-feature (feature vectors) mean; ``None`` for 0.
    std : float or sequence of float or None
        Per-channel or per-feature standard deviation; ``None`` for 1.

    Notes
    -----
    ``uint8`` images are divided by 255 first; floating point input is used as is.
    The ``generator`` argument is accepted for a uniform interface and not used.

    Examples
    --------
    >>> import torch
    >>> norm = Normalize(mean=(0.5,), std=(0.25,))
    >>> norm(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8))[0, 0, 0, 0].item()
    2.0
    """

    def __init__(self, mean=None, std=None):
        self._init_stats(mean, std)

    @torch.no_grad()
    def __call__(self, batch, generator=None):
        """Normalise ``batch``.

        Parameters
        ----------
        batch : torch.Tensor of shape (B, C, H, W) or (B, d)
            Images (``uint8`` or float in [0, 1]) or feature vectors.
        generator : torch.Generator, optional
            Unused.

        Returns
        -------
        torch.Tensor
            ``float32``, same shape and device.
        """
        if not isinstance(batch, torch.Tensor) or batch.ndim not in (2, 4):
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(
                f"Normalize expects a tensor of shape (batch, channels, height, width) or "
                f"(batch, features), got {shape}."
            )
        x = _to_float(batch) if batch.ndim == 4 else batch.to(torch.float32, copy=True)
        return self._normalize(x)

    def __repr__(self):
        return f"Normalize({self._stats_repr()})"


# --------------------------------------------------------------------------- weak


class WeakAugment(_Normalizing):
    """Weak augmentation: random crop with zero padding, horizontal flip, normalise.

    Equivalent, sample by sample, to ``v2.Compose([v2.RandomCrop(size,
    padding=padding), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32,
    scale=True), v2.Normalize(mean, std)])``, computed for the whole batch at once:
    the batch is padded once and every sample's crop is gathered from it.

    Parameters
    ----------
    padding : int or None, default=None
        Zero padding of the random crop, in pixels (0: no crop). ``None`` picks
        :func:`default_padding` from the image size of each batch (4 at 32 pixels,
        8 at 64 pixels).
    flip : bool, default=True
        Flip horizontally with probability 0.5. Turn it off for digits, signs and
        text.
    mean : float or sequence of float or None, default=None
        Per-channel mean (on the [0, 1] scale) for the normalisation; ``None`` for 0.
    std : float or sequence of float or None, default=None
        Per-channel standard deviation for the normalisation; ``None`` for 1.

    Examples
    --------
    >>> import torch
    >>> aug = WeakAugment(padding=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    >>> out = aug(images, torch.Generator().manual_seed(0))
    >>> out.shape, out.dtype
    (torch.Size([8, 3, 32, 32]), torch.float32)
    """

    def __init__(self, padding=None, flip=True, mean=None, std=None):
        bad = isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0
        if padding is not None and bad:
            raise ValueError(f"padding must be None or a non-negative integer, got {padding!r}.")
        self.padding = None if padding is None else int(padding)
        self.flip = bool(flip)
        self._init_stats(mean, std)

    def _padding_for(self, image_size):
        return default_padding(image_size) if self.padding is None else self.padding

    def sample_params(self, batch_size, image_size, generator):
        """Draw the random parameters of a batch.

        Parameters
        ----------
        batch_size : int
            Number of samples.
        image_size : tuple of int
            ``(H, W)``.
        generator : torch.Generator
            CPU generator the parameters are drawn from.

        Returns
        -------
        dict of torch.Tensor
            CPU tensors of length ``batch_size``: ``"top"`` and ``"left"`` (int64
            offsets of the crop in the padded image, in ``[0, 2 * padding]``) and
            ``"flip"`` (bool).
        """
        _check_generator(generator)
        p = self._padding_for(image_size)
        top = torch.randint(0, 2 * p + 1, (batch_size,), generator=generator)
        left = torch.randint(0, 2 * p + 1, (batch_size,), generator=generator)
        flip = torch.rand(batch_size, generator=generator) < 0.5
        if not self.flip:
            flip = torch.zeros_like(flip)
        return {"top": top, "left": left, "flip": flip}

    def _crop_flip(self, x, params):
        """Crop every sample at its own offset and flip the chosen ones.

        Both happen in one gather from the zero-padded batch: the column index of a
        flipped sample runs backwards through its crop window.
        """
        b, c, h, w = x.shape
        p = self._padding_for((h, w))
        if (p == 0 and not self.flip) or b == 0:
            return x
        small = torch.stack(
            [params["top"].long(), params["left"].long(), params["flip"].long()], dim=1
        ).to(x.device, non_blocking=True)
        top, left, flip = small[:, 0:1], small[:, 1:2], small[:, 2:3].bool()
        if not self.flip:  # never flip, whatever the parameters say
            flip = torch.zeros_like(flip)
        ar_h = torch.arange(h, device=x.device)
        ar_w = torch.arange(w, device=x.device)
        padded = nnf.pad(x, (p, p, p, p)) if p > 0 else x
        rows = top + ar_h  # (B, H)
        cols = left + torch.where(flip, ar_w.flip(0), ar_w)  # (B, W)
        index = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).view(b, 1, h * w)
        return padded.reshape(b, c, (h + 2 * p) * (w + 2 * p)).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)

    @torch.no_grad()
    def apply(self, batch, params):
        """Augment ``batch`` with given parameters.

        Parameters
        ----------
        batch : torch.Tensor of shape (B, C, H, W)
            ``uint8`` images or float images in [0, 1].
        params : dict
            As returned by :meth:`sample_params`.

        Returns
        -------
        torch.Tensor of shape (B, C, H, W)
            ``float32``, normalised, on the batch's device.
        """
        _check_images(batch, type(self).__name__)
        # cropping before the conversion moves 4x fewer bytes for uint8 input
        return self._normalize(_to_float(self._crop_flip(batch, params)))

    def __call__(self, batch, generator):
        """Augment ``batch``, each sample with its own random parameters.

        Parameters
        ----------
        batch : torch.Tensor of shape (B, C, H, W)
            ``uint8`` images or float images in [0, 1], on any device.
        generator : torch.Generator
            CPU generator every random parameter is drawn from.

        Returns
        -------
        torch.Tensor of shape (B, C, H, W)
            ``float32``, normalised, on the batch's device.
        """
        _check_images(batch, type(self).__name__)
        return self.apply(batch, self.sample_params(batch.shape[0], tuple(batch.shape[-2:]), generator))

    def __repr__(self):
        return f"{type(self).__name__}(padding={self.padding}, flip={self.flip}, {self._stats_repr()})"


# --------------------------------------------------------------------------- strong ops


def _blend(x, other, factor):
    """``clamp(factor * x + (1 - factor) * other, 0, 1)`` with a per-sample factor."""
    f = factor.view(-1, 1, 1, 1)
    return (x * f + other * (1.0 - f)).clamp_(0.0, 1.0)


def _grayscale(x):
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _op_autocontrast(x, m):
    # Same formula as v2.functional.autocontrast on float images, for any channel count.
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    scale = torch.where(flat, torch.ones_like(high), high - low)
    low = torch.where(flat, torch.zeros_like(low), low)
    return (x - low).div_(scale).clamp_(0.0, 1.0)


def _op_brightness(x, m):
    return x.mul(m.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _op_color(x, m):
    if x.shape[1] != 3:  # saturation has no effect without colour (as in PIL and v2)
        return x
    return _blend(x, _grayscale(x), m)


def _op_contrast(x, m):
    grey = _grayscale(x) if x.shape[1] == 3 else x
    mean = grey.mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, m)


def _op_equalize(x, m):
    return TF.equalize(x)


def _op_identity(x, m):
    return x


def _op_posterize(x, m):
    # Keep the top `bits` bits of the 8-bit value, as on uint8 images (and in PIL).
    shift = torch.pow(2.0, 8.0 - m.floor()).view(-1, 1, 1, 1)
    k = torch.round(x * 255.0)
    return torch.floor(k / shift).mul_(shift).div_(255.0)


def _op_sharpness(x, m):
    b, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    a, centre = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, centre, a], [a, a, a]], dtype=x.dtype, device=x.device)
    blurred = nnf.conv2d(x, kernel.expand(c, 1, 3, 3), groups=c)
    out = x.clone()
    inner = out[..., 1:-1, 1:-1]
    inner.add_((blurred - inner).mul_(1.0 - m.view(-1, 1, 1, 1)))
    return out.clamp_(0.0, 1.0)


def _op_solarize(x, m):
    threshold = (m / 255.0).view(-1, 1, 1, 1)
    return torch.where(x >= threshold, 1.0 - x, x)


def _inverse_affine(kind, magnitude, height, width):
    """Per-sample inverse affine matrices (n, 2, 3), float64, for the geometric ops.

    Mirrors ``torchvision.transforms.v2.functional._geometry._get_inverse_affine_matrix``
    with the arguments that ``v2.RandAugment`` passes for each operation.
    """
    n = magnitude.shape[0]
    m = magnitude.to(torch.float64)
    zeros = torch.zeros(n, dtype=torch.float64)
    rot, sx, sy, tx, ty = zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()
    cx, cy = zeros.clone(), zeros.clone()  # centre, relative to the image centre
    is_rot = kind == 0
    is_shx, is_shy = kind == 1, kind == 2
    is_trx, is_try = kind == 3, kind == 4
    # v2.functional.rotate(angle) passes -angle to the matrix.
    rot = torch.where(is_rot, torch.deg2rad(-m), rot)
    sx = torch.where(is_shx, torch.atan(m), sx)
    sy = torch.where(is_shy, torch.atan(m), sy)
    shear = is_shx | is_shy
    # shears are about the top-left corner: centre=[0, 0] in pixel coordinates
    cx = torch.where(shear, torch.full_like(cx, -0.5 * width), cx)
    cy = torch.where(shear, torch.full_like(cy, -0.5 * height), cy)
    tx = torch.where(is_trx, torch.trunc(m * width), tx)
    ty = torch.where(is_try, torch.trunc(m * height), ty)

    cos_sy = torch.cos(sy)
    tan_sx = torch.tan(sx)
    a = torch.cos(rot - sy) / cos_sy
    b = -(a * tan_sx + torch.sin(rot))
    c = torch.sin(rot - sy) / cos_sy
    d = torch.cos(rot) - c * tan_sx
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(n, 2, 3)


def _affine_batch(x, theta):
    """Warp each image with its own inverse affine matrix (nearest, zero fill).

    The sampling grid follows ``v2.functional.affine`` (pixel-centred coordinates,
    ``align_corners=False``).
    """
    n, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=dev, dtype=dt).view(1, 1, w)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=dev, dtype=dt).view(1, h, 1)
    scale = torch.tensor([0.5 * w, 0.5 * h], dtype=dt, device=dev)
    r = theta.transpose(1, 2).div(scale)  # (n, 3, 2): [x, y, 1] @ r gives the grid
    r = r.view(n, 3, 2, 1, 1)
    gx = xs * r[:, 0, 0] + ys * r[:, 1, 0] + r[:, 2, 0]
    gy = xs * r[:, 0, 1] + ys * r[:, 1, 1] + r[:, 2, 1]
    grid = torch.stack([gx, gy], dim=-1)
    return nnf.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


_PIXEL_OPS = {
    "autocontrast": _op_autocontrast,
    "brightness": _op_brightness,
    "color": _op_color,
    "contrast": _op_contrast,
    "equalize": _op_equalize,
    "identity": _op_identity,
    "posterize": _op_posterize,
    "sharpness": _op_sharpness,
    "solarize": _op_solarize,
}


class StrongAugment(WeakAugment):
    """Strong augmentation: weak augmentation, one random operation, cutout, normalise.

    For every sample, in this order: the random crop and flip of
    :class:`WeakAugment`; one operation drawn uniformly from ``ops`` at a magnitude
    drawn uniformly from its range in :data:`STRONG_OPS`; cutout of a random square;
    normalisation. This is the ``RandomAugment(1)`` + cutout recipe of the Co-Reg
    reference, computed batched: samples are grouped by operation, colour operations
    use per-sample factors in the formulas of :mod:`torchvision.transforms.v2.functional`
    (``autocontrast`` and ``equalize`` work per image and channel as there), and all
    geometric operations go through a single ``grid_sample`` with per-sample affine
    matrices built as ``v2.RandAugment`` builds them (nearest interpolation, black
    fill).

    Parameters
    ----------
    padding : int or None, default=None
        Zero padding of the random crop (see :class:`WeakAugment`).
    flip : bool, default=True
        Random horizontal flip with probability 0.5.
    mean : float or sequence of float or None, default=None
        Per-channel mean for the normalisation.
    std : float or sequence of float or None, default=None
        Per-channel standard deviation for the normalisation.
    cutout : bool or int, default=True
        ``True``: cut out a square whose side is drawn uniformly up to half the
        shorter image side (``int(u * min(H, W))``, ``u`` uniform in [0, 0.5)).
        An int: a square of that fixed side (the reference used 16 pixels for
        grey-scale data). ``False`` or 0: no cutout. The square's centre is uniform
        over the image; it starts at ``max(0, centre - side // 2)`` and is clipped at
        the far border. It is filled with the reference's colour (125, 123, 114) / 255
        on RGB images and with grey 0.5 otherwise (the reference's RGB fill fails on
        grey images), before normalisation.
    ops : sequence of str or None, default=None
        Names of the operations to draw from; ``None`` for all 14 of
        :data:`STRONG_OPS`. An empty sequence gives crop, flip and cutout only.

    Notes
    -----
    Colour operations are computed on float images in [0, 1]; ``posterize`` keeps
    the top bits of the 8-bit value like ``v2.functional.posterize`` on ``uint8``
    images, ``solarize`` inverts pixels at or above ``threshold / 255``. ``color``
    does nothing on grey images, as in PIL and torchvision. Sign and size of the
    translations follow ``v2.RandAugment`` (whole pixels).

    Examples
    --------
    >>> import torch
    >>> aug = StrongAugment(padding=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    >>> aug(images, torch.Generator().manual_seed(0)).shape
    torch.Size([8, 3, 32, 32])
    """

    def __init__(self, padding=None, flip=True, mean=None, std=None, cutout=True, ops=None):
        super().__init__(padding=padding, flip=flip, mean=mean, std=std)
        if cutout is None or cutout is False:
            cutout = 0
        if not (cutout is True or (isinstance(cutout, numbers.Integral) and cutout >= 0)):
            raise ValueError(f"cutout must be True, False or a non-negative integer side, got {cutout!r}.")
        self.cutout = True if cutout is True else int(cutout)
        if ops is None:
            ops = tuple(STRONG_OPS)
        if isinstance(ops, str):
            ops = (ops,)
        ops = tuple(ops)
        unknown = [op for op in ops if op not in STRONG_OPS]
        if unknown:
            raise ValueError(f"unknown operation(s) {unknown}; choose among {list(STRONG_OPS)}.")
        if len(set(ops)) != len(ops):
            raise ValueError(f"ops lists an operation more than once: {list(ops)}.")
        self.ops = ops

    def sample_params(self, batch_size, image_size, generator):
        """Draw the random parameters of a batch.

        Parameters
        ----------
        batch_size : int
            Number of samples.
        image_size : tuple of int
            ``(H, W)``.
        generator : torch.Generator
            CPU generator the parameters are drawn from.

        Returns
        -------
        dict of torch.Tensor
            CPU tensors of length ``batch_size``: those of
            :meth:`WeakAugment.sample_params`; ``"op"`` (int64 index into
            ``self.ops``) and ``"magnitude"`` (float64, in the units of
            :data:`STRONG_OPS`, 0 for operations without magnitude);
            ``"cutout_size"``, ``"cutout_top"``, ``"cutout_left"`` (int64; the
            square covers rows ``cutout_top`` to ``cutout_top + cutout_size - 1``,
            clipped to the image, and the same for columns).
        """
        params = super().sample_params(batch_size, image_size, generator)
        h, w = (int(s) for s in image_size)
        n_ops = len(self.ops)
        if n_ops:
            op = torch.randint(0, n_ops, (batch_size,), generator=generator)
            u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
            low = torch.tensor([(STRONG_OPS[o] or (0.0, 0.0))[0] for o in self.ops], dtype=torch.float64)
            high = torch.tensor([(STRONG_OPS[o] or (0.0, 0.0))[1] for o in self.ops], dtype=torch.float64)
            magnitude = low[op] + u * (high[op] - low[op])
            posterize = torch.tensor([o == "posterize" for o in self.ops])[op]
            magnitude = torch.where(posterize, magnitude.floor(), magnitude)
            params["op"] = op
            params["magnitude"] = magnitude
        if self.cutout:
            side = min(h, w)
            u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
            centre_y = torch.randint(0, h, (batch_size,), generator=generator)
            centre_x = torch.randint(0, w, (batch_size,), generator=generator)
            if self.cutout is True:
                size = (u * 0.5 * side).long()
            else:
                size = torch.full((batch_size,), min(self.cutout, side), dtype=torch.long)
            params["cutout_size"] = size
            params["cutout_top"] = (centre_y - size // 2).clamp_(min=0)
            params["cutout_left"] = (centre_x - size // 2).clamp_(min=0)
        return params

    def _crop_flip_ops(self, batch, params):
        """Crop, flip and apply each sample's operation; float32 result in batch order.

        Samples are sorted by operation once, on the input (cheapest for ``uint8``);
        each group of samples sharing an operation is processed as one batch, and one
        gather puts the results back in batch order. All geometric operations form
        one group with per-sample affine matrices.
        """
        op, magnitude = params["op"], params["magnitude"]
        names = self.ops
        geometric = torch.tensor([name in _GEOMETRIC_OPS for name in names], dtype=torch.bool)
        # group key: the pixel ops in order, all geometric ops together last
        key = torch.where(geometric[op], torch.full_like(op, len(names)), op)
        order = torch.argsort(key, stable=True)
        counts = torch.bincount(key, minlength=len(names) + 1).tolist()
        device = batch.device
        order_dev = order.to(device, non_blocking=True)
        sorted_params = {k: params[k][order] for k in ("top", "left", "flip")}
        xs = _to_float(self._crop_flip(batch.index_select(0, order_dev), sorted_params))
        op_sorted = op[order]
        mag_sorted = magnitude[order]
        mag_dev = mag_sorted.to(torch.float32).to(device, non_blocking=True)
        h, w = xs.shape[-2:]
        results = []
        start = 0
        for k, count in enumerate(counts):
            if count == 0:
                continue
            stop = start + count
            part = xs[start:stop]
            if k < len(names):
                result = _PIXEL_OPS[names[k]](part, mag_dev[start:stop])
            else:
                kind = torch.tensor([_GEOMETRIC_OPS.index(names[i]) for i in op_sorted[start:stop].tolist()])
                theta = _inverse_affine(kind, mag_sorted[start:stop], h, w)
                result = _affine_batch(part, theta.to(torch.float32).to(device, non_blocking=True))
            results.append(result)
            start = stop
        out = torch.cat(results) if len(results) > 1 else results[0]
        return out.index_select(0, torch.argsort(order).to(device, non_blocking=True))

    def _cutout(self, x, params):
        b, c, h, w = x.shape
        box = torch.stack(
            [params["cutout_top"], params["cutout_left"], params["cutout_size"]], dim=1
        ).long().to(x.device, non_blocking=True)
        top, left, size = box[:, 0:1], box[:, 1:2], box[:, 2:3]
        rows = torch.arange(h, device=x.device).view(1, h)
        cols = torch.arange(w, device=x.device).view(1, w)
        in_rows = (rows >= top) & (rows < top + size)
        in_cols = (cols >= left) & (cols < left + size)
        mask = (in_rows[:, :, None] & in_cols[:, None, :]).view(b, 1, h, w)
        fill = [v / 255.0 for v in _RGB_CUTOUT_FILL] if c == 3 else [0.5] * c
        fill = torch.tensor(fill, dtype=x.dtype).to(x.device, non_blocking=True).view(1, c, 1, 1)
        return torch.where(mask, fill, x)

    @torch.no_grad()
    def apply(self, batch, params):
        """Augment ``batch`` with given parameters.

        Parameters
        ----------
        batch : torch.Tensor of shape (B, C, H, W)
            ``uint8`` images or float images in [0, 1].
        params : dict
            As returned by :meth:`sample_params`.

        Returns
        -------
        torch.Tensor of shape (B, C, H, W)
            ``float32``, normalised, on the batch's device.
        """
        _check_images(batch, type(self).__name__)
        if self.ops and batch.shape[0]:
            x = self._crop_flip_ops(batch, params)
        else:
            x = _to_float(self._crop_flip(batch, params))
        if self.cutout:
            x = self._cutout(x, params)
        return self._normalize(x)

    def __repr__(self):
        return (
            f"StrongAugment(padding={self.padding}, flip={self.flip}, {self._stats_repr()}, "
            f"cutout={self.cutout}, ops={self.ops})"
        )


# --------------------------------------------------------------------------- features


class FeatureAugment(_Normalizing):
    """Augmentation of feature vectors ``(B, d)``, for example precomputed embeddings.

    - ``"weak"``: add Gaussian noise with standard deviation ``noise * std_j`` to
      feature ``j``, then normalise;
    - ``"strong"``: the same, then drop every normalised feature with probability
      ``drop`` (set to 0, that is to the feature's mean) and rescale the kept ones by
      ``1 / (1 - drop)``, as dropout does.

    Parameters
    ----------
    kind : {"weak", "strong"}, default="weak"
        Strength of the augmentation.
    noise : float, default=0.1
        Noise level, in units of each feature's standard deviation.
    drop : float, default=0.1
        Dropout probability of the strong augmentation, in [0, 1).
    mean : float or sequence of float or None, default=None
        Per-feature mean for the normalisation; ``None`` for 0.
    std : float or sequence of float or None, default=None
        Per-feature standard deviation, for the noise scale and the normalisation;
        ``None`` for 1.

    Examples
    --------
    >>> import torch
    >>> aug = FeatureAugment("strong", mean=0.0, std=1.0)
    >>> aug(torch.zeros(4, 16), torch.Generator().manual_seed(0)).shape
    torch.Size([4, 16])
    """

    def __init__(self, kind="weak", noise=0.1, drop=0.1, mean=None, std=None):
        if kind not in ("weak", "strong"):
            raise ValueError(f"kind must be 'weak' or 'strong', got {kind!r}.")
        if not (isinstance(noise, numbers.Real) and noise >= 0):
            raise ValueError(f"noise must be a non-negative number, got {noise!r}.")
        if not (isinstance(drop, numbers.Real) and 0 <= drop < 1):
            raise ValueError(f"drop must be a number in [0, 1), got {drop!r}.")
        self.kind = kind
        self.noise = float(noise)
        self.drop = float(drop)
        self._init_stats(mean, std)

    def sample_params(self, batch_size, n_features, generator):
        """Draw the random parameters of a batch.

        Parameters
        ----------
        batch_size : int
            Number of samples.
        n_features : int
            Number of features ``d``.
        generator : torch.Generator
            CPU generator the parameters are drawn from.

        Returns
        -------
        dict of torch.Tensor
            ``"noise"``: standard normal draws ``(B, d)``; for ``kind="strong"`` also
            ``"keep"``: bool ``(B, d)``.
        """
        _check_generator(generator)
        params = {"noise": torch.randn(batch_size, n_features, generator=generator)}
        if self.kind == "strong":
            params["keep"] = torch.rand(batch_size, n_features, generator=generator) >= self.drop
        return params

    @torch.no_grad()
    def apply(self, batch, params):
        """Augment ``batch`` with given parameters.

        Parameters
        ----------
        batch : torch.Tensor of shape (B, d)
            Feature vectors.
        params : dict
            As returned by :meth:`sample_params`.

        Returns
        -------
        torch.Tensor of shape (B, d)
            ``float32``, normalised, on the batch's device.
        """
        self._check(batch)
        x = self._normalize(batch.to(torch.float32, copy=True))
        # noise of std noise * std_j before normalisation is noise * N(0, 1) after it
        x = x + self.noise * params["noise"].to(x.device, non_blocking=True)
        if self.kind == "strong":
            keep = params["keep"].to(x.device, non_blocking=True)
            x = torch.where(keep, x / (1.0 - self.drop), torch.zeros_like(x))
        return x

    def _check(self, batch):
        if not isinstance(batch, torch.Tensor) or batch.ndim != 2:
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"FeatureAugment expects a tensor of shape (batch, features), got {shape}.")

    def __call__(self, batch, generator):
        """Augment ``batch``, each sample with its own random draws.

        Parameters
        ----------
        batch : torch.Tensor of shape (B, d)
            Feature vectors, on any device.
        generator : torch.Generator
            CPU generator every random draw comes from.

        Returns
        -------
        torch.Tensor of shape (B, d)
            ``float32``, normalised, on the batch's device.
        """
        self._check(batch)
        return self.apply(batch, self.sample_params(batch.shape[0], batch.shape[1], generator))

    def __repr__(self):
        return (
            f"FeatureAugment(kind={self.kind!r}, noise={self.noise}, drop={self.drop}, "
            f"{self._stats_repr()})"
        )


# --------------------------------------------------------------------------- user transforms


class PerSample(_Normalizing):
    """Apply a user's transform sample by sample (the slow path for custom transforms).

    Parameters
    ----------
    transform : callable
        Takes one ``(C, H, W)`` tensor (with the batch's dtype and device) and
        returns a tensor (``uint8``, or float in [0, 1]) or a PIL image, for example
        a :mod:`torchvision.transforms.v2` pipeline. All outputs must have one
        shape.
    mean : float or sequence of float or None, default=None
        Per-channel mean for the normalisation of the outputs.
    std : float or sequence of float or None, default=None
        Per-channel standard deviation for the normalisation of the outputs.

    Notes
    -----
    Torch's global random number generator is seeded from ``generator`` for each
    batch inside :func:`torch.random.fork_rng`, so results are reproducible and the
    caller's global random state is left untouched. Randomness from other sources
    (Python's ``random``, NumPy) inside ``transform`` is not controlled.

    Examples
    --------
    >>> import torch
    >>> from torchvision.transforms import v2
    >>> aug = PerSample(v2.RandomHorizontalFlip(), mean=0.5, std=0.5)
    >>> images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    >>> aug(images, torch.Generator().manual_seed(0)).shape
    torch.Size([4, 3, 8, 8])
    """

    def __init__(self, transform, mean=None, std=None):
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}.")
        self.transform = transform
        self._init_stats(mean, std)

    @torch.no_grad()
    def __call__(self, batch, generator):
        """Transform every sample of ``batch`` and normalise.

        Parameters
        ----------
        batch : torch.Tensor of shape (B, C, H, W)
            Images, on any device.
        generator : torch.Generator
            CPU generator the per-batch seed is drawn from.

        Returns
        -------
        torch.Tensor of shape (B, C', H', W')
            ``float32``, normalised, on the batch's device.
        """
        _check_images(batch, "PerSample")
        _check_generator(generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        device = batch.device
        cuda = device.type == "cuda"
        forked = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
        outputs = []
        with torch.random.fork_rng(devices=forked):
            torch.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(forked[0]):
                    torch.cuda.manual_seed(seed)
            for i in range(batch.shape[0]):
                out = self.transform(batch[i])
                if not isinstance(out, torch.Tensor):
                    out = TF.pil_to_tensor(out)
                out = out.to(device)
                if outputs and out.shape != outputs[0].shape:
                    raise ValueError(
                        f"the transform returned shape {tuple(out.shape)} for sample {i} but "
                        f"{tuple(outputs[0].shape)} for sample 0; it must return one shape."
                    )
                outputs.append(_to_float(out))
        if not outputs:
            return self._normalize(_to_float(batch))
        return self._normalize(torch.stack(outputs))

    def __repr__(self):
        return f"PerSample({self.transform!r}, {self._stats_repr()})"


# --------------------------------------------------------------------------- factories


def make_augmenters(sample_shape, *, mean, std, flip=True, padding=None, kind=None):
    """Build the weak, strong and test transforms for samples of a given shape.

    Parameters
    ----------
    sample_shape : tuple of int
        ``(C, H, W)`` for images, ``(d,)`` for feature vectors.
    mean : float or sequence of float or None
        Per-channel (per-feature) mean for the normalisation, for example from
        :func:`channel_stats`; ``None`` for 0.
    std : float or sequence of float or None
        Per-channel (per-feature) standard deviation; ``None`` for 1.
    flip : bool, default=True
        Random horizontal flips (images only). Turn off for digits, signs, text.
    padding : int or None, default=None
        Padding of the random crop; ``None`` for :func:`default_padding` of the
        image size (4 at 32 pixels, 8 at 64 pixels).
    kind : {"images", "features"} or None, default=None
        Kind of samples; ``None`` infers it from ``len(sample_shape)``.

    Returns
    -------
    dict
        ``{"weak": ..., "strong": ..., "test": ...}``. Images:
        :class:`WeakAugment`, :class:`StrongAugment`, :class:`Normalize`. Feature
        vectors: ``FeatureAugment("weak")``, ``FeatureAugment("strong")``,
        :class:`Normalize`.

    Examples
    --------
    >>> augs = make_augmenters((3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    >>> sorted(augs)
    ['strong', 'test', 'weak']
    >>> augs["weak"].padding
    4
    """
    shape = tuple(int(s) for s in sample_shape)
    if kind is None:
        kind = {1: "features", 3: "images"}.get(len(shape))
    expected = {"features": 1, "images": 3}
    if kind not in expected or len(shape) != expected[kind]:
        raise ValueError(
            "sample_shape must be (channels, height, width) for images or (d,) for feature "
            f"vectors, got {tuple(sample_shape)} (kind={kind!r})."
        )
    if kind == "features":
        return {
            "weak": FeatureAugment("weak", mean=mean, std=std),
            "strong": FeatureAugment("strong", mean=mean, std=std),
            "test": Normalize(mean=mean, std=std),
        }
    if padding is None:
        padding = default_padding(shape[1:])
    return {
        "weak": WeakAugment(padding=padding, flip=flip, mean=mean, std=std),
        "strong": StrongAugment(padding=padding, flip=flip, mean=mean, std=std),
        "test": Normalize(mean=mean, std=std),
    }


def channel_stats(data):
    """Per-channel (or per-feature) mean and standard deviation of a data set.

    Parameters
    ----------
    data : torch.Tensor, numpy.ndarray or iterable of them
        Images ``(N, C, H, W)`` (``uint8``, scaled by 1/255, or float in [0, 1]) or
        feature vectors ``(N, d)``; or an iterable of such batches (an item that is
        a tuple or list, as a data loader yields, contributes its first element).

    Returns
    -------
    mean : numpy.ndarray of shape (C,) or (d,)
        Mean per channel over all pixels (per feature over all samples).
    std : numpy.ndarray of shape (C,) or (d,)
        Population standard deviation; entries that would be 0 (a constant channel
        or feature) are set to 1 so that they can divide.

    Raises
    ------
    ValueError
        If there is no data, a batch is neither 2-D nor 4-D, or batches disagree on
        the number of channels.

    Examples
    --------
    >>> import torch
    >>> mean, std = channel_stats(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
    >>> mean.tolist(), std.tolist()
    ([1.0, 1.0], [1.0, 1.0])
    """
    if isinstance(data, (torch.Tensor, np.ndarray)):
        data = [data]
    count = 0
    mean = m2 = None
    width = None
    for i, batch in enumerate(data):
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        batch = torch.as_tensor(batch)
        x = batch.to(torch.float64)
        if batch.ndim == 4:
            if batch.dtype == torch.uint8:
                x = x / 255.0
            x = x.transpose(0, 1).reshape(batch.shape[1], -1)
        elif batch.ndim == 2:
            x = x.t()
        else:
            raise ValueError(
                f"batch {i} has shape {tuple(batch.shape)}; expected (N, C, H, W) images or "
                "(N, d) feature vectors."
            )
        if width is not None and x.shape[0] != width:
            raise ValueError(
                f"batch {i} has {x.shape[0]} channels/features but earlier batches have {width}."
            )
        width = x.shape[0]
        n = x.shape[1]
        if n == 0:
            continue
        b_mean = x.mean(dim=1)
        b_m2 = ((x - b_mean[:, None]) ** 2).sum(dim=1)
        if count == 0:
            mean, m2 = b_mean, b_m2
        else:  # Chan et al.'s pairwise update
            delta = b_mean - mean
            total = count + n
            mean = mean + delta * (n / total)
            m2 = m2 + b_m2 + delta**2 * (count * n / total)
        count += n
    if count == 0:
        raise ValueError("channel_stats got no data; pass a non-empty tensor or iterable of batches.")
    std = torch.sqrt(m2 / count)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return mean.cpu().numpy(), std.cpu().numpy()

"""Images of any size and colour mode, decoded once into one uint8 store.

The classifiers train on many passes over their images. :func:`load_images`
turns file paths, lists of PIL images and torch datasets into an in-memory
:class:`~sklearn_npll._data.inputs.TensorData` (or one backed by a temporary
memory-mapped file when it would exceed a memory budget) at the training
resolution, decoding each image exactly once with parallel workers (a torch
``DataLoader``) and JPEG draft mode, so a large photo is decoded at a reduced
scale and never held at full resolution longer than one image at a time.

Size policy (``image_size``):

- ``None``: images must share one size (the library's original rule);
- an int ``s`` or a pair ``(h, w)``: every image is scaled (antialiased
  bilinear) so that it covers the target, keeping its aspect ratio, then
  centre-cropped to it; an int gives a square ``s x s``;
- ``"auto"``: images of one size keep it; mixed sizes are resized (as above)
  to a square whose side is the median shorter side of the images, capped at
  :data:`AUTO_SIZE_CAP` pixels.

Colour modes: if every image is grey (PIL modes "1", "L", "LA", "I", "F", ...)
the store has one channel ("L"); otherwise every image is converted to RGB
(alpha is dropped, palettes are expanded). Every image is read by
:mod:`~sklearn_npll._data.reader`: upright (EXIF orientation applied) and
16-bit or float images rescaled to 8 bits.

Unreadable images: the header pass and the decode pass (in the DataLoader
workers) record each failure with its index and reason instead of stopping
at the first; one :class:`~sklearn_npll._data.reader.ImageReadError` then
lists them all, or, with ``on_bad_image="skip"``, one warning does and the
store holds the readable images only (``data.source_mask`` says which).
"""

import math
import os
import tempfile

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .annotated import AnnotatedImages
from .inputs import GREY_MODES, InputData, TensorData, as_input_data, is_pil_image
from .reader import ImageReadError, oriented_size, read_header, read_image, report_unreadable

__all__ = ["load_images", "AUTO_SIZE_CAP", "DEFAULT_MEMORY_BUDGET", "check_image_size"]

#: Largest side (pixels) that ``image_size="auto"`` resizes mixed sizes to.
AUTO_SIZE_CAP = 128

#: Stores larger than this many bytes go to a memory-mapped temporary file.
DEFAULT_MEMORY_BUDGET = 2 * 1024**3

#: Datasets are not opened twice: ``"auto"`` reads the sizes of this many
#: items (the first ones) to resolve a size.
DATASET_SIZE_SAMPLE = 64

# Images decoded per DataLoader batch: the decode pass holds at most
# (2 * workers + 1) such batches at the training resolution, plus one image
# being decoded per worker.
_DECODE_BATCH = 32
# Fewer images than this are decoded in the main process (starting worker
# processes would cost more than it saves).
_MIN_PARALLEL = 256


def check_image_size(image_size):
    """Validate ``image_size``; return ``"auto"``, None or ``(h, w)``."""
    if image_size is None or (isinstance(image_size, str) and image_size == "auto"):
        return image_size
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in image_size):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(
            f"image_size must be 'auto', None, an int or a pair (height, width) of ints; "
            f"got {image_size!r}.")
    if min(size) < 1:
        raise ValueError(f"image_size must be positive; got {image_size!r}.")
    return size


def resolve_auto_size(sizes):
    """The ``"auto"`` size for images of sizes ``sizes`` (a list of (h, w)).

    One size for all keeps that size; mixed sizes give a square whose side is
    the median shorter side, capped at :data:`AUTO_SIZE_CAP`.
    """
    sizes = [(int(h), int(w)) for h, w in sizes]
    if len(set(sizes)) == 1:
        return sizes[0]
    side = int(min(np.median([min(s) for s in sizes]), AUTO_SIZE_CAP))
    return (side, side)


def cover_size(size, target):
    """Size ``(h, w)`` that scales ``size`` (keeping its aspect ratio) to just
    cover ``target``; the centre crop of that to ``target`` is the result."""
    (h, w), (th, tw) = size, target
    scale = max(th / h, tw / w)
    return max(th, round(h * scale)), max(tw, round(w * scale))


def fit_to_size(image, target):
    """Resize a PIL image or a ``(C, H, W)`` tensor to ``target`` (h, w):
    antialiased bilinear scaling to cover it, then a centre crop. An image of
    that size is returned unchanged."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    size = (image.height, image.width) if is_pil_image(image) else tuple(image.shape[-2:])
    if tuple(size) == tuple(target):
        return image
    image = F.resize(image, list(cover_size(size, target)),
                     interpolation=InterpolationMode.BILINEAR, antialias=True)
    return F.center_crop(image, list(target))


def _pil_to_chw(img):
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        return torch.from_numpy(arr.copy()).unsqueeze(0)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _read_headers(paths):
    """``(headers, failures)``: ``{index: (upright (h, w), mode)}`` of the
    files that open, ``[(index, name, reason)]`` of those that do not."""
    headers, failures = {}, []
    for i, path in enumerate(paths):
        try:
            headers[i] = read_header(path)
        except ImageReadError as exc:
            failures.append((i, repr(path), str(exc)))
    return headers, failures


# --------------------------------------------------------------------------
# One decoded sample per index (run in DataLoader workers)
# --------------------------------------------------------------------------


class _FileDecoder:
    """Files decoded by the shared reader, JPEGs in draft mode when they are
    larger than the target, then fitted to ``size``."""

    def __init__(self, paths, sizes, mode, size):
        self.paths, self.sizes, self.mode, self.size = paths, sizes, mode, size

    def __len__(self):
        return len(self.paths)

    def name(self, i):
        return repr(self.paths[i])

    def __getitem__(self, i):
        draft = None
        if self.size is not None and tuple(self.sizes[i]) != tuple(self.size):
            draft = cover_size(self.sizes[i], self.size)
        # the header pass gave Pillow's decompression-bomb warning already
        im = read_image(self.paths[i], self.mode, draft=draft, warn_bomb=False)
        if self.size is not None:
            im = fit_to_size(im, self.size)
        return _pil_to_chw(im)


class _PILDecoder:
    def __init__(self, images, mode, size):
        self.images, self.mode, self.size = images, mode, size

    def __len__(self):
        return len(self.images)

    def name(self, i):
        return "PIL image"

    def __getitem__(self, i):
        im = read_image(self.images[i], self.mode)
        if self.size is not None:
            im = fit_to_size(im, self.size)
        return _pil_to_chw(im)


class _DatasetDecoder:
    """Items of a torch dataset, converted like :class:`DatasetImages` and,
    when their size differs, resized; ``channels`` fixes grey or colour."""

    def __init__(self, source, size, channels, dtype):
        self.source = source  # a DatasetImages
        self.size, self.channels, self.dtype = size, channels, dtype

    def __len__(self):
        return len(self.source)

    def name(self, i):
        return f"dataset item {i}"

    def __getitem__(self, i):
        x = self.source._load(i)
        if x.ndim == 3:
            if x.shape[0] != self.channels:
                x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:1]
            if self.size is not None:
                x = fit_to_size(x, self.size)
        if x.dtype != self.dtype:
            if self.dtype == torch.float32 and x.dtype == torch.uint8:
                x = x.float() / 255.0
            else:
                raise ValueError(
                    f"Dataset item {i} is a float image but item 0 is uint8; give every "
                    "image the same pixel type.")
        return x.contiguous()


class _Indexed(Dataset):
    """``(i, sample, None)``, or ``(i, None, reason)`` for a sample that
    cannot be decoded: a worker records the failure rather than raising it
    (the DataLoader would bury it under a worker traceback and stop there)."""

    def __init__(self, decode):
        self.decode = decode

    def __len__(self):
        return len(self.decode)

    def __getitem__(self, i):
        try:
            return i, self.decode[i], None
        except Exception as exc:  # this sample's failure, reported after the pass
            if isinstance(exc, ImageReadError):
                return i, None, str(exc)
            return i, None, f"{type(exc).__name__}: {exc}"


def _collate(items):
    good = [(i, x) for i, x, reason in items if reason is None]
    failed = [(i, reason) for i, _, reason in items if reason is not None]
    batch = torch.stack([x for _, x in good]) if good else None
    return torch.tensor([i for i, _ in good], dtype=torch.long), batch, failed


def _n_workers(num_workers, n):
    if num_workers is None:
        return 0 if n < _MIN_PARALLEL else min(8, os.cpu_count() or 1)
    if num_workers < 0:
        return os.cpu_count() or 1
    return int(num_workers)


def decode_into_store(decode, sample_shape, dtype, *, memory_budget=DEFAULT_MEMORY_BUDGET,
                      num_workers=None, kind="images"):
    """Decode every sample once into one array: in memory, or in a temporary
    memory-mapped file when it would take more than ``memory_budget`` bytes.

    Parameters
    ----------
    decode : sequence
        ``decode[i]`` returns sample ``i`` as a CPU tensor of ``sample_shape``.
    sample_shape : tuple of int
    dtype : torch.dtype
    memory_budget : int or None
        None keeps the store in memory whatever its size.
    num_workers : int or None
        DataLoader worker processes; None: up to 8 (one per core) for 256
        samples or more, otherwise the main process; -1: one per core.
    kind : {"images", "features"}

    Returns
    -------
    data : TensorData
        Its tensor is a view of ``data.store`` (a numpy array, or a
        ``np.memmap`` with ``data.on_disk`` True); the rows of samples that
        failed are left unset.
    failures : list of (int, str, str)
        ``(index, name, reason)`` of each sample that could not be decoded.
    """
    n = len(decode)
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    nbytes = n * math.prod(sample_shape) * np_dtype.itemsize
    on_disk = memory_budget is not None and nbytes > memory_budget
    if on_disk:
        # An unnamed temporary file: removed by the system once unmapped.
        store = np.memmap(tempfile.TemporaryFile(prefix="sklearn_npll-"), dtype=np_dtype,
                          mode="w+", shape=(n, *sample_shape))
    else:
        store = np.empty((n, *sample_shape), dtype=np_dtype)
    workers = _n_workers(num_workers, n)
    loader = DataLoader(_Indexed(decode), batch_size=_DECODE_BATCH, num_workers=workers,
                        collate_fn=_collate)
    failures = []
    name = getattr(decode, "name", lambda i: f"item {i}")
    for idx, batch, failed in loader:
        if batch is not None:
            store[idx.numpy()] = batch.numpy()
        failures += [(i, name(i), reason) for i, reason in failed]
    data = TensorData(torch.from_numpy(store), kind=kind)
    data.store, data.on_disk = store, on_disk
    return data, failures


def _keep_readable(decoded, rows_to_x, n_total, on_bad_image, what, earlier=()):
    """The store of the samples that could be read: every failure (those of
    the header pass, ``earlier``, and those of the decode) reported at once
    (:func:`~sklearn_npll._data.reader.report_unreadable`), then, when some
    are skipped, the store's rows moved up over theirs in place."""
    data, failures = decoded
    rows_to_x = np.asarray(rows_to_x, dtype=np.int64)
    failures = list(earlier) + [(int(rows_to_x[r]), name, reason)
                                for r, name, reason in failures]
    kept = report_unreadable(failures, n_total, on_bad_image, what)
    if len(kept) == n_total:
        return data
    rows = np.flatnonzero(np.isin(rows_to_x, kept))
    store = data.store
    # rows[j] >= j: each chunk reads rows no earlier chunk has overwritten
    for start in range(0, len(rows), _DECODE_BATCH * 8):
        chunk = rows[start:start + _DECODE_BATCH * 8]
        store[start:start + len(chunk)] = store[chunk]
    store = store[:len(rows)]
    out = TensorData(torch.from_numpy(store), kind=data.kind)
    out.store, out.on_disk = store, data.on_disk
    out.source_mask = np.isin(np.arange(n_total), kept)
    return out


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def _say(verbose, message):
    if verbose and verbose >= 1:
        print(message, flush=True)


def _resolve(image_size, sizes, verbose, what):
    """Target size from the policy and the images' sizes (None: no resize)."""
    distinct = sorted({tuple(s) for s in sizes})
    if image_size is None:
        if len(distinct) > 1:
            (h0, w0), (h1, w1) = distinct[:2]
            raise ValueError(
                f"The {what} have {len(distinct)} different sizes (e.g. {h0}x{w0} and "
                f"{h1}x{w1}, HxW) and image_size=None requires one size. Pass "
                "image_size='auto', an int or (height, width) to resize them.")
        return None
    if image_size == "auto":
        size = resolve_auto_size(sizes)
        if len(distinct) > 1:
            median = int(np.median([min(s) for s in sizes]))
            _say(verbose, f"The {what} have {len(distinct)} different sizes; resizing all "
                          f"to {size[0]}x{size[1]} (median shorter side {median} px, capped "
                          f"at {AUTO_SIZE_CAP}). Pass image_size to choose another size.")
        return size
    return tuple(image_size)


def load_images(X, image_size="auto", *, mode=None, memory_budget=DEFAULT_MEMORY_BUDGET,
                num_workers=None, verbose=0, on_bad_image="raise"):
    """Read any supported input into an :class:`InputData`, images at one size.

    File paths, lists of PIL images and torch datasets are decoded once into a
    uint8 (or, for float datasets, float32) store at the target size. Arrays,
    tensors and feature matrices are converted as by :func:`as_input_data`
    and resized only when their size differs from an explicit target.

    Parameters
    ----------
    X : object
        Anything :func:`~sklearn_npll._data.inputs.as_input_data` accepts; lists of
        PIL images or paths may mix sizes and colour modes.
    image_size : "auto", None, int or (h, w)
        Size policy; see the module documentation.
    mode : {"L", "RGB"} or None
        Colour mode to convert to; None decides from the images (RGB unless
        every image is grey).
    memory_budget : int or None, default=DEFAULT_MEMORY_BUDGET
        Bytes above which the store is a memory-mapped temporary file.
    num_workers : int or None
        Decode workers, as in :func:`decode_into_store`.
    verbose : int
        1 or more reports a resize chosen by ``"auto"``.
    on_bad_image : {"raise", "skip"}, default="raise"
        What to do with files, PIL images or dataset items that cannot be
        read: one error listing them all, or one warning listing them all
        and a store without them (``data.source_mask`` then marks the
        samples of ``X`` kept).

    Returns
    -------
    data : InputData
    size : tuple (h, w) or None
        The images' size in ``data`` (None for feature vectors).
    """
    if isinstance(X, AnnotatedImages):
        X = X.images
    image_size = check_image_size(image_size)
    options = dict(memory_budget=memory_budget, num_workers=num_workers, verbose=verbose,
                   on_bad_image=on_bad_image)
    if isinstance(X, (list, tuple)) and len(X) and all(is_pil_image(x) for x in X):
        return _load_pil(list(X), image_size, mode, **options)
    if isinstance(X, (list, tuple)) and len(X) and all(
            isinstance(x, (str, os.PathLike)) for x in X):
        return _load_files([os.fspath(p) for p in X], image_size, mode, **options)
    if isinstance(X, Dataset) and not isinstance(X, InputData):
        return _load_dataset(X, image_size, mode, **options)
    data = as_input_data(X)
    if data.kind != "images":
        return data, None
    size = tuple(data.sample_shape[1:])
    if image_size in (None, "auto") or tuple(image_size) == size:
        return data, size
    return _resize_tensor_data(data, tuple(image_size)), tuple(image_size)


def _load_pil(images, image_size, mode, *, verbose, on_bad_image, **store):
    sizes = [oriented_size(im) for im in images]
    size = _resolve(image_size, sizes, verbose, "images") or sizes[0]
    mode = mode or ("L" if all(im.mode in GREY_MODES for im in images) else "RGB")
    decoded = decode_into_store(_PILDecoder(images, mode, size),
                                (1 if mode == "L" else 3, *size), torch.uint8, **store)
    return _keep_readable(decoded, np.arange(len(images)), len(images), on_bad_image,
                          "images"), size


def _load_files(paths, image_size, mode, *, verbose, on_bad_image, **store):
    headers, failures = _read_headers(paths)
    if not headers:  # nothing readable: no size to resolve
        report_unreadable(failures, len(paths), on_bad_image, "image files")
    readable = sorted(headers)
    sizes = [headers[i][0] for i in readable]
    size = _resolve(image_size, sizes, verbose, "image files") or sizes[0]
    mode = mode or ("L" if all(headers[i][1] in GREY_MODES for i in readable) else "RGB")
    decode = _FileDecoder([paths[i] for i in readable], sizes, mode, size)
    decoded = decode_into_store(decode, (1 if mode == "L" else 3, *size), torch.uint8,
                                **store)
    return _keep_readable(decoded, readable, len(paths), on_bad_image, "image files",
                          earlier=failures), size


def _sample_sizes(dataset, probe):
    """Sizes and colour (all grey?) of the first items, which decide the
    "auto" size and the mode; an item that fails here fails again, and is
    reported, in the decode pass."""
    sizes, grey = [], True
    for i in range(min(len(dataset), DATASET_SIZE_SAMPLE)):
        try:
            item = dataset[i]
            item = item[0] if isinstance(item, (tuple, list)) and item else item
            if is_pil_image(item):
                sizes.append(oriented_size(item))
                grey &= item.mode in GREY_MODES
            else:
                x = probe._load(i)
                sizes.append(tuple(x.shape[1:]))
                grey &= x.shape[0] == 1
        except Exception:  # noqa: BLE001 (reported by the decode pass)
            continue
    return sizes, grey


def _load_dataset(dataset, image_size, mode, *, verbose, on_bad_image, **store):
    from .inputs import DatasetImages

    probe = DatasetImages(dataset)  # loads item 0: shape, dtype, grey or colour
    every = np.arange(len(dataset))
    if probe.kind != "images":
        decode = _DatasetDecoder(probe, None, None, probe.dtype)
        decoded = decode_into_store(decode, probe.sample_shape, probe.dtype,
                                    kind="features", **store)
        return _keep_readable(decoded, every, len(every), on_bad_image, "items"), None
    sizes, grey = _sample_sizes(dataset, probe)
    size = _resolve(image_size, sizes, verbose, "dataset images")
    if size is None:
        # one size required: items of another size fail, naming their index
        decode, size, shape = probe, sizes[0], probe.sample_shape
    else:
        mode = mode or ("L" if grey else "RGB")
        probe._grey = mode == "L"
        channels = 1 if mode == "L" else 3
        decode = _DatasetDecoder(probe, size, channels, probe.dtype)
        shape = (channels, *size)
    decoded = decode_into_store(decode, shape, probe.dtype, **store)
    return _keep_readable(decoded, every, len(every), on_bad_image, "dataset items"), size


def _resize_tensor_data(data, size):
    out = torch.empty((len(data), data.sample_shape[0], *size), dtype=data.dtype)
    for start in range(0, len(data), 256):
        batch = data.get_batch(slice(start, start + 256))
        out[start:start + len(batch)] = fit_to_size(batch, size)
    return TensorData(out, kind="images")

"""Turning what users hold into data that training can iterate.

:func:`as_input_data` accepts numpy arrays, torch tensors, lists of numpy
arrays, torch datasets and feature matrices, and returns an
:class:`InputData`: a torch ``Dataset`` whose samples are CPU tensors of one
shape, either images ``(C, H, W)`` or feature vectors ``(d,)``. Images stay
compact: ``uint8`` pixels stay ``uint8``. Lists of PIL images and of file
paths, which may mix sizes and colour modes, are decoded into one store by
:func:`~sklearn_npll._data.image_store.load_images`.
"""

import operator
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from .reader import GREY_MODES, to_library_mode

__all__ = ["GREY_MODES", "DatasetImages", "InputData", "TensorData", "as_input_data",
           "is_pil_image"]

_SHAPE_HELP = (
    "Pass images as (N, H, W), (N, H, W, C) or (N, C, H, W) with C in (1, 3), "
    "or features as a 2-D matrix (n_samples, n_features)."
)


def is_pil_image(obj):
    """Whether ``obj`` is a PIL image (the library's one check)."""
    from PIL import Image

    return isinstance(obj, Image.Image)


def _as_indices(indices, n):
    """Normalise an index (int, slice, list, array, tensor, mask) to int64 positions."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    if isinstance(indices, slice):
        return np.arange(n, dtype=np.int64)[indices]
    if isinstance(indices, (int, np.integer)):
        indices = [int(indices)]
    idx = np.asarray(indices)
    if idx.ndim != 1:
        idx = idx.reshape(-1)
    if idx.dtype.kind == "b":
        if idx.size != n:
            raise IndexError(
                f"Boolean mask has {idx.size} entries but there are {n} samples."
            )
        return np.flatnonzero(idx).astype(np.int64)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if idx.dtype.kind not in "iu":
        raise IndexError(
            f"Sample indices must be integers or a boolean mask, got dtype {idx.dtype}."
        )
    idx = idx.astype(np.int64)
    bad = (idx < -n) | (idx >= n)
    if np.any(bad):
        raise IndexError(
            f"Sample index {int(idx[bad][0])} is out of range for {n} samples."
        )
    return np.where(idx < 0, idx + n, idx)


def _check_position(i, n):
    i = operator.index(i)
    if not -n <= i < n:
        raise IndexError(f"Sample index {i} is out of range for {n} samples.")
    return i + n if i < 0 else i


# --------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------


class InputData(Dataset):
    """Base class of the library's input datasets.

    A torch ``Dataset`` whose samples are CPU tensors of one shape.

    Attributes
    ----------
    kind : {"images", "features"}
        What a sample is.
    sample_shape : tuple of int
        ``(C, H, W)`` for images, ``(d,)`` for features.
    dtype : torch.dtype
        ``torch.uint8`` for images given as uint8 arrays, PIL images or files
        (values 0..255); ``torch.float32`` otherwise (images in [0, 1]).
    source_mask : ndarray of bool or None
        One entry per sample of the user's ``X``, True for those held, when
        some could not be read and were left out (``on_bad_image="skip"``);
        None when every sample of ``X`` is held, in order.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll._data.inputs import as_input_data
    >>> data = as_input_data(np.zeros((4, 8, 8), dtype=np.uint8))
    >>> len(data), data.sample_shape, data.get_batch([0, 2]).shape
    (4, (1, 8, 8), torch.Size([2, 1, 8, 8]))
    """

    kind = "images"
    sample_shape = ()
    dtype = torch.uint8
    source_mask = None

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, i):
        raise NotImplementedError

    def get_batch(self, indices):
        """Return the samples at ``indices`` stacked into one tensor.

        Parameters
        ----------
        indices : array-like of int, slice or boolean mask
            Sample positions.

        Returns
        -------
        batch : torch.Tensor of shape (len(indices), \\*sample_shape)
            A CPU tensor of dtype :attr:`dtype`.
        """
        idx = _as_indices(indices, len(self))
        if idx.size == 0:
            return torch.empty((0, *self.sample_shape), dtype=self.dtype)
        return torch.stack([self[int(i)] for i in idx])

    def subset(self, indices):
        """Return an :class:`InputData` holding only the samples at ``indices``.

        Parameters
        ----------
        indices : array-like of int, slice or boolean mask
            Sample positions.

        Returns
        -------
        data : InputData
        """
        return _SubsetData(self, _as_indices(indices, len(self)))

    def __repr__(self):
        return (
            f"{type(self).__name__}(n_samples={len(self)}, kind={self.kind!r}, "
            f"sample_shape={self.sample_shape}, dtype={self.dtype})"
        )


class TensorData(InputData):
    """Samples held in memory as one tensor.

    Parameters
    ----------
    data : torch.Tensor of shape (N, C, H, W) or (N, d)
        The samples, channels first for images. Kept on the CPU.
    kind : {"images", "features"}, default=None
        Defaults to ``"features"`` for 2-D data and ``"images"`` for 4-D data.

    Attributes
    ----------
    data : torch.Tensor
        The stored samples.

    Examples
    --------
    >>> import torch
    >>> from sklearn_npll._data.inputs import TensorData
    >>> data = TensorData(torch.zeros(5, 3, 4, 4, dtype=torch.uint8))
    >>> data.get_batch([4, 0]).shape
    torch.Size([2, 3, 4, 4])
    """

    def __init__(self, data, kind=None):
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"data must be a torch.Tensor, got {type(data).__name__}.")
        if kind is None:
            kind = "features" if data.ndim == 2 else "images"
        expected_ndim = {"images": 4, "features": 2}.get(kind)
        if expected_ndim is None:
            raise ValueError(f"kind must be 'images' or 'features', got {kind!r}.")
        if data.ndim != expected_ndim:
            raise ValueError(
                f"{kind} data must be a {expected_ndim}-D tensor, got shape "
                f"{tuple(data.shape)}."
            )
        self.data = data.detach().cpu()
        self.kind = kind
        self.sample_shape = tuple(int(s) for s in self.data.shape[1:])
        self.dtype = self.data.dtype

    def __len__(self):
        return int(self.data.shape[0])

    def __getitem__(self, i):
        return self.data[i]

    def get_batch(self, indices):
        """Return the samples at ``indices`` with a single tensor index.

        Parameters
        ----------
        indices : array-like of int, torch.Tensor, slice or boolean mask
            Sample positions.

        Returns
        -------
        batch : torch.Tensor of shape (len(indices), \\*sample_shape)
        """
        if isinstance(indices, slice):
            return self.data[indices]
        if not isinstance(indices, torch.Tensor):
            arr = np.asarray(indices)
            if arr.dtype.kind == "b":
                indices = torch.from_numpy(arr.reshape(-1))
            else:
                indices = torch.as_tensor(arr.reshape(-1), dtype=torch.long)
        return self.data[indices]

    def subset(self, indices):
        idx = torch.from_numpy(_as_indices(indices, len(self)))
        return TensorData(self.data[idx], kind=self.kind)


class DatasetImages(InputData):
    """Wrap a torch ``Dataset`` that yields images.

    Each item is an image, or a tuple/list whose first item is the image (as
    yielded by labelled datasets such as torchvision's). An image may be a PIL
    image, a numpy array or a tensor of shape (H, W), (H, W, C) or (C, H, W);
    a 1-D item is read as a feature vector. The first item fixes the sample
    shape and dtype; an item of another shape raises an error naming its
    index.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        A map-style dataset with ``__len__`` and ``__getitem__``.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from sklearn_npll._data.inputs import DatasetImages
    >>> ds = TensorDataset(torch.rand(4, 3, 8, 8), torch.arange(4))
    >>> data = DatasetImages(ds)
    >>> data.sample_shape, data.dtype
    ((3, 8, 8), torch.float32)
    """

    def __init__(self, dataset):
        try:
            n = len(dataset)
        except TypeError as exc:
            raise TypeError(
                "The dataset must define __len__ (a map-style torch Dataset)."
            ) from exc
        if n == 0:
            raise ValueError("The dataset is empty; X has no samples.")
        self.dataset = dataset
        self._grey = None
        self.sample_shape = None
        first = self._load(0)
        self.sample_shape = tuple(int(s) for s in first.shape)
        self.dtype = first.dtype
        self.kind = "features" if first.ndim == 1 else "images"

    def _load(self, i):
        item = self.dataset[i]
        if isinstance(item, (tuple, list)):
            if not item:
                raise ValueError(f"Dataset item {i} is an empty tuple.")
            item = item[0]
        where = f"dataset item {i}"
        if is_pil_image(item):
            if self._grey is None:
                self._grey = item.mode in GREY_MODES
            return _pil_to_tensor(item, "L" if self._grey else "RGB")
        if isinstance(item, torch.Tensor):
            arr = item.detach().cpu()
            if arr.dtype in (torch.float16, torch.bfloat16):
                arr = arr.float()
            arr = arr.numpy()
        else:
            arr = np.asarray(item)
        if arr.ndim == 1:
            if arr.size == 0:
                raise ValueError(f"{where} is an empty feature vector.")
            return _to_tensor(_features_to_float(arr[None], where))[0]
        if arr.ndim not in (2, 3):
            raise ValueError(
                f"{where} has shape {arr.shape}; an image must be (H, W), "
                "(H, W, C) or (C, H, W), a feature vector 1-D."
            )
        return _images_to_tensor(arr[None], where=where)[0]

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        i = _check_position(i, len(self))
        x = self._load(i)
        if tuple(x.shape) != self.sample_shape:
            raise ValueError(
                f"Dataset item {i} has shape {tuple(x.shape)} after conversion "
                f"but item 0 has {self.sample_shape}. All images must have the "
                "same size and number of channels; resize them first."
            )
        if x.dtype != self.dtype:
            if self.dtype == torch.float32 and x.dtype == torch.uint8:
                x = x.float() / 255.0
            else:
                raise ValueError(
                    f"Dataset item {i} is a float image but item 0 is uint8; "
                    "give every image the same pixel type."
                )
        return x


class _SubsetData(InputData):
    """A view on some samples of another :class:`InputData`."""

    def __init__(self, base, indices):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.kind = base.kind
        self.sample_shape = base.sample_shape
        self.dtype = base.dtype

    def __len__(self):
        return int(self.indices.size)

    def __getitem__(self, i):
        return self.base[int(self.indices[_check_position(i, len(self))])]

    def get_batch(self, indices):
        return self.base.get_batch(self.indices[_as_indices(indices, len(self))])

    def subset(self, indices):
        return _SubsetData(self.base, self.indices[_as_indices(indices, len(self))])


# --------------------------------------------------------------------------
# Conversion helpers
# --------------------------------------------------------------------------


def _to_tensor(arr):
    return torch.from_numpy(np.ascontiguousarray(arr))


def _first_bad_sample(bad_per_sample):
    return int(np.flatnonzero(bad_per_sample)[0])


def _features_to_float(X, where="X"):
    """Validate a 2-D numeric feature matrix and return it as float32."""
    if X.dtype.kind not in "biuf":
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{where}: features must be numeric, got dtype {X.dtype} ({exc})."
            ) from exc
    X = X.astype(np.float32, copy=False)
    finite = np.isfinite(X)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        n_bad = int((~finite.all(axis=1)).sum())
        raise ValueError(
            f"{where} contains NaN or infinity, first at sample {r}, feature {c} "
            f"({n_bad} samples affected). Remove or impute these values."
        )
    return X


def _images_to_tensor(arr, where="X"):
    """Convert a numpy batch of images (N, H, W[, C]) or (N, C, H, W) to (N, C, H, W).

    ``where`` names the input in errors; for a batch of one image coming from
    a dataset item it names that item, otherwise errors name the sample index.
    """
    n = arr.shape[0]

    def name(i):
        return where if where != "X" else f"sample {i} of X"

    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[1] in (1, 3):
            pass
        elif arr.shape[-1] in (1, 3, 4):
            if arr.shape[-1] == 4:  # RGBA: drop the alpha channel
                arr = arr[..., :3]
            arr = arr.transpose(0, 3, 1, 2)
        else:
            shape = arr.shape if where == "X" else arr.shape[1:]
            raise ValueError(
                f"Cannot tell the channel axis of {where} with shape {shape}: "
                "expected 1 or 3 channels first or 1, 3 or 4 channels last. "
                + _SHAPE_HELP
            )
    else:
        raise ValueError(f"{where} has shape {arr.shape}. " + _SHAPE_HELP)

    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return _to_tensor(arr)
    if kind == "b":
        return _to_tensor(arr.astype(np.float32))
    if kind in "iu":
        flat = arr.reshape(n, -1)
        bad = (flat.min(axis=1) < 0) | (flat.max(axis=1) > 255)
        if bad.any():
            i = _first_bad_sample(bad)
            raise ValueError(
                f"Integer images must hold values in 0..255; {name(i)} ranges "
                f"from {flat[i].min()} to {flat[i].max()}. Rescale them, or pass "
                "float images in [0, 1]."
            )
        return _to_tensor(arr.astype(np.uint8))
    if kind != "f":
        raise ValueError(
            f"Images must be numeric (uint8 or float), got dtype {arr.dtype} in "
            f"{where}."
        )
    arr = arr.astype(np.float32, copy=False)
    flat = arr.reshape(n, -1)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        i = _first_bad_sample(~finite)
        raise ValueError(
            f"Images contain NaN or infinity, first in {name(i)} "
            f"({int((~finite).sum())} samples affected)."
        )
    bad = (flat.min(axis=1) < 0) | (flat.max(axis=1) > 1)
    if bad.any():
        i = _first_bad_sample(bad)
        raise ValueError(
            f"Float images must lie in [0, 1]; {name(i)} ranges from "
            f"{flat[i].min():g} to {flat[i].max():g}. Scale them (e.g. X / 255 "
            "for 0-255 pixel values, or X / X.max()) or pass uint8 images."
        )
    return _to_tensor(arr)


def _pil_to_tensor(img, mode):
    arr = np.asarray(to_library_mode(img, mode), dtype=np.uint8)
    if arr.ndim == 2:
        return torch.from_numpy(arr.copy()).unsqueeze(0)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def _array_to_data(X):
    """Convert a numpy array or torch tensor to :class:`TensorData`."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu()
        if X.dtype in (torch.float16, torch.bfloat16):
            X = X.float()
        X = X.numpy()
    if X.ndim == 0 or X.shape[0] == 0 or X.size == 0:
        raise ValueError(f"X is empty (shape {X.shape}); give at least one sample.")
    if X.ndim == 2:
        return TensorData(_to_tensor(_features_to_float(X)), kind="features")
    if X.ndim in (3, 4):
        return TensorData(_images_to_tensor(X), kind="images")
    raise ValueError(
        f"X has {X.ndim} dimensions (shape {X.shape}). " + _SHAPE_HELP
    )


# Lists of PIL images and of paths may mix sizes and colour modes: they are
# decoded (and resized) into one store by image_store.load_images.
_DECODED_ELSEWHERE = ("Lists of PIL images and of file paths are decoded by "
                      "sklearn_npll._data.image_store.load_images, not as_input_data.")


def _list_to_data(X):
    if len(X) == 0:
        raise ValueError("X is an empty list; give at least one sample.")
    first = X[0]
    if is_pil_image(first):
        for i, item in enumerate(X):
            if not is_pil_image(item):
                raise TypeError(
                    f"X mixes PIL images with {type(item).__name__} (item {i}); "
                    "give a list of PIL images only."
                )
        raise TypeError(_DECODED_ELSEWHERE)
    if isinstance(first, (str, os.PathLike)):
        for i, item in enumerate(X):
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(
                    f"X mixes file paths with {type(item).__name__} (item {i}); "
                    "give a list of paths only."
                )
        raise TypeError(_DECODED_ELSEWHERE)
    if isinstance(first, (np.ndarray, torch.Tensor)):
        shape = tuple(first.shape)
        for i, item in enumerate(X):
            if not isinstance(item, (np.ndarray, torch.Tensor)):
                raise TypeError(
                    f"X mixes arrays with {type(item).__name__} (item {i}); give "
                    "a list of arrays only."
                )
            if tuple(item.shape) != shape:
                raise ValueError(
                    f"Item {i} of X has shape {tuple(item.shape)} but item 0 has "
                    f"{shape}. All samples must have the same shape (images the "
                    "same size and channels); resize them first."
                )
        if isinstance(first, torch.Tensor):
            stacked = torch.stack([torch.as_tensor(item).cpu() for item in X])
        else:
            stacked = np.stack([np.asarray(item) for item in X])
        return _array_to_data(stacked)
    try:
        arr = np.asarray(X)
    except ValueError as exc:
        raise ValueError(
            f"Could not read X as an array ({exc}). " + _SHAPE_HELP
        ) from exc
    if arr.dtype == object:
        types = sorted({type(item).__name__ for item in X})
        raise TypeError(
            f"Could not read X: it holds items of types {types}. Give images "
            "(arrays, PIL images or file paths) or a numeric feature matrix."
        )
    return _array_to_data(arr)


def as_input_data(X):
    """Turn user input into an :class:`InputData`.

    Parameters
    ----------
    X : object
        One of:

        - a numpy array or torch tensor: 2-D ``(n_samples, n_features)``
          features (stored as float32); 3-D ``(N, H, W)`` grey images; 4-D
          ``(N, C, H, W)`` when ``C`` (axis 1) is 1 or 3, otherwise
          ``(N, H, W, C)`` with ``C`` in (1, 3, 4) (a 4th alpha channel is
          dropped). ``uint8`` images stay ``uint8``; integer images must lie in
          0..255 (stored as uint8); float images must lie in [0, 1] (stored as
          float32);
        - a list of numpy arrays or tensors of one shape (stacked, then as
          above);
        - a torch ``Dataset`` (:class:`DatasetImages`);
        - an :class:`InputData` (returned as is);

    Returns
    -------
    data : InputData
        Images are stored channels first, ``(N, C, H, W)``.

    Raises
    ------
    ValueError
        For empty input, NaN or infinite values, a wrong number of dimensions,
        images of different sizes or unreadable files; the message names the
        offending index, path or shape.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll._data.inputs import as_input_data
    >>> data = as_input_data(np.zeros((10, 32, 32, 3), dtype=np.uint8))
    >>> data.kind, data.sample_shape, data.dtype
    ('images', (3, 32, 32), torch.uint8)
    >>> as_input_data(np.ones((5, 7))).sample_shape
    (7,)
    """
    if isinstance(X, InputData):
        return X
    if isinstance(X, (np.ndarray, torch.Tensor)):
        return _array_to_data(X)
    if isinstance(X, Dataset):
        return DatasetImages(X)
    if isinstance(X, (str, os.PathLike)):
        raise TypeError(
            f"X is a single path ({os.fspath(X)!r}); pass a list of image file "
            "paths, one per sample."
        )
    if is_pil_image(X):
        raise TypeError("X is a single PIL image; pass a list of images.")
    if isinstance(X, (list, tuple)):
        return _list_to_data(X)
    if hasattr(X, "__array__") or hasattr(X, "iloc"):
        return _array_to_data(np.asarray(X))
    if hasattr(X, "__len__") and hasattr(X, "__getitem__"):
        return _list_to_data(list(X))
    raise TypeError(
        f"Cannot use an object of type {type(X).__name__} as X. " + _SHAPE_HELP
        + " Lists of PIL images or of file paths and torch Datasets work too."
    )

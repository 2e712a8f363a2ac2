"""The JSON side of :mod:`sklearn_npll.io`.

Values become JSON with every tensor and numeric array set aside under a name
(they travel as safetensors tensors), and classes or functions become
references by dotted name. Reading a reference never imports anything: a name
resolves through the allowlist below, or through the names the user trusted.
"""

import functools
import importlib
import math
import types

import numpy as np
import torch
from torch import nn

from ._nn import backbones as _backbones

__all__ = ["Decoder", "Encoder", "FileFormatError", "Unstorable", "UntrustedNameError",
           "allowlist", "reference_name", "references"]


class FileFormatError(ValueError):
    """A file that :func:`sklearn_npll.io.load` cannot read.

    It was not written by :func:`sklearn_npll.io.dump` (a pickle, a
    ``torch.save`` archive, another tool's safetensors file), or it is
    damaged, truncated, or written in another version of the format. The
    message says which.

    Examples
    --------
    >>> from sklearn_npll.io import FileFormatError
    >>> issubclass(FileFormatError, ValueError)
    True
    """

    __module__ = "sklearn_npll.io"  # where it is public


class UntrustedNameError(ValueError):
    """A file names a class or function outside the allowlist.

    Loading it would import that name and call it. The message lists every
    such name and where the file uses it; pass the names you trust to
    :func:`sklearn_npll.io.load` as ``trusted``.

    Examples
    --------
    >>> from sklearn_npll.io import UntrustedNameError
    >>> issubclass(UntrustedNameError, ValueError)
    True
    """

    __module__ = "sklearn_npll.io"  # where it is public


class Unstorable(TypeError):
    """A value with no JSON form: an object instance, a lambda, a local class."""

    def __init__(self, path, value):
        self.path, self.value = path, value
        super().__init__(f"{path}: {type(value).__name__} object cannot be stored")


# ------------------------------------------------------------------ references
def _public_classes(namespace, prefix, base):
    return {f"{prefix}.{name}": obj for name, obj in vars(namespace).items()
            if not name.startswith("_") and isinstance(obj, type) and issubclass(obj, base)}


@functools.lru_cache(maxsize=None)
def allowlist():
    """``{dotted name: object}`` of what a file may name without ``trusted``.

    The library's estimators and backbones, ``torch.optim`` optimizers and
    ``torch.nn`` modules: classes whose construction from JSON arguments runs
    no code of the file's choosing. The library's names are fixed strings, so
    that files stay readable when its private modules move.
    """
    from . import CCClassifier, CoRegClassifier, PRODENClassifier, VLMPartialAnnotator

    names = {f"sklearn_npll.{cls.__name__}": cls for cls in (
        CCClassifier, CoRegClassifier, PRODENClassifier, VLMPartialAnnotator)}
    names.update({f"sklearn_npll._nn.backbones.{cls.__name__}": cls for cls in (
        _backbones.MLP, _backbones.PreActBlock, _backbones.PreActResNet18,
        _backbones.SmallCNN)})
    names.update(_public_classes(torch.optim, "torch.optim", torch.optim.Optimizer))
    names.update(_public_classes(nn, "torch.nn", nn.Module))
    return names


def _import_name(module, qualname):
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def import_dotted(name):
    """Import ``package.module.Attribute`` (only for names the user trusted)."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            return _import_name(".".join(parts[:split]), ".".join(parts[split:]))
        except ModuleNotFoundError:
            continue
    raise ImportError(f"{name!r} is not an importable dotted name.")


def reference_name(obj):
    """The name ``obj`` is stored under: its allowlist name, or the dotted
    name it is importable by; None when it has none (a lambda, a local
    class, an instance)."""
    if not isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        return None
    for name, allowed in allowlist().items():
        if allowed is obj:
            return name
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if not module or "<" in qualname:
        return None
    try:
        found = _import_name(module, qualname)
    except (ImportError, AttributeError):
        return None
    return f"{module}.{qualname}" if found is obj else None


def references(node, path=""):
    """Yield ``(dotted name, path)`` of every reference in a JSON document."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from references(item, f"{path}[{i}]")
    elif isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"], path
        for key, item in node.items():
            yield from references(item, f"{path}.{key}" if path else str(key))


# -------------------------------------------------------------------- encoding
_TENSOR_KINDS = "biuf"  # numpy kinds stored as tensors


def _is_tag(key):
    return isinstance(key, str) and key.startswith("$")


class Encoder:
    """Turn a value into JSON; tensors and numeric arrays go to ``tensors``
    under ``values.<path>``.

    Parameters
    ----------
    tensors : dict
        Receives ``{name: torch.Tensor}``.
    """

    def __init__(self, tensors):
        self.tensors = tensors

    def tensor(self, name, value):
        """Store a tensor under ``name``; return its name."""
        if name in self.tensors:
            raise ValueError(f"Two values would be stored as the tensor {name!r}.")
        # a copy: safetensors refuses tensors that share memory
        self.tensors[name] = value.detach().to("cpu").contiguous().clone()
        return name

    def __call__(self, value, path):
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, (list, tuple)):
            items = [self(v, f"{path}.{i}") for i, v in enumerate(value)]
            return {"$tuple": items} if isinstance(value, tuple) else items
        if isinstance(value, dict):
            return self._dict(value, path)
        if isinstance(value, np.generic):
            return {"$scalar": self(value.item(), path), "dtype": value.dtype.str}
        if isinstance(value, np.ndarray):
            return self._array(value, path)
        if isinstance(value, torch.Tensor):
            return {"$tensor": self.tensor(f"values.{path}", value), "as": "torch"}
        if isinstance(value, torch.device):
            return {"$device": str(value)}
        if isinstance(value, np.random.RandomState):
            _, keys, pos, has_gauss, cached = value.get_state()
            return {"$random_state": [keys.tolist(), int(pos), int(has_gauss), float(cached)]}
        name = reference_name(value)
        if name is None:
            raise Unstorable(path, value)
        return {"$ref": name}

    def _dict(self, value, path):
        if all(isinstance(k, str) and not _is_tag(k) for k in value):
            return {k: self(v, f"{path}.{k}") for k, v in value.items()}
        return {"$dict": [[self(k, f"{path}.key"), self(v, f"{path}.{k}")]
                          for k, v in value.items()]}

    def _array(self, value, path):
        if value.dtype.kind in _TENSOR_KINDS:
            native = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("="))
            name = self.tensor(f"values.{path}", torch.from_numpy(native))
            return {"$tensor": name, "as": "numpy", "dtype": native.dtype.str}
        if value.dtype.kind not in "UO":
            raise Unstorable(path, value)
        return {"$array": [self(v, f"{path}.{i}") for i, v in enumerate(value.ravel().tolist())],
                "dtype": value.dtype.str, "shape": list(value.shape)}


# -------------------------------------------------------------------- decoding
class Decoder:
    """Turn what :class:`Encoder` wrote back into values.

    Parameters
    ----------
    tensors : dict
        ``{name: torch.Tensor}`` read from the file.
    resolve : callable
        ``resolve(dotted name, path)`` -> the object (allowlist or trusted).
    """

    def __init__(self, tensors, resolve):
        self.tensors, self.resolve, self.used = tensors, resolve, set()

    def __call__(self, node, path):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self(v, f"{path}.{i}") for i, v in enumerate(node)]
        if not isinstance(node, dict):
            raise FileFormatError(f"{path}: unexpected JSON value {node!r:.80}.")
        tags = [k for k in node if _is_tag(k)]
        if not tags:
            return {k: self(v, f"{path}.{k}") for k, v in node.items()}
        method = getattr(self, "_" + tags[0][1:], None) if len(tags) == 1 else None
        if method is None:
            raise FileFormatError(f"{path}: unknown entry {sorted(node)} (written by a newer "
                                  "version of sklearn_npll, or edited).")
        try:
            return method(node, path)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, FileFormatError):
                raise
            raise FileFormatError(f"{path}: malformed entry {node!r:.120} ({exc}).") from exc

    def _float(self, node, path):
        if node["$float"] not in ("nan", "inf", "-inf"):
            raise ValueError("not nan, inf or -inf")
        return float(node["$float"])

    def _tuple(self, node, path):
        return tuple(self(v, f"{path}.{i}") for i, v in enumerate(node["$tuple"]))

    def _dict(self, node, path):
        return {self(k, f"{path}.key"): self(v, f"{path}.value") for k, v in node["$dict"]}

    def _scalar(self, node, path):
        return np.array(self(node["$scalar"], path), dtype=_dtype(node["dtype"]))[()]

    def _array(self, node, path):
        dtype, items = _dtype(node["dtype"]), self(node["$array"], path)
        if dtype.kind not in "UO":
            raise ValueError(f"dtype {dtype} is not stored as a list")
        array = np.empty(len(items), dtype=dtype)
        for i, item in enumerate(items):
            array[i] = item
        return array.reshape(node["shape"])

    def _tensor(self, node, path):
        name = node["$tensor"]
        if name not in self.tensors:
            raise FileFormatError(f"{path}: the tensor {name!r} is missing from the file.")
        self.used.add(name)
        tensor = self.tensors[name]
        if node.get("as") == "torch":
            return tensor
        array = tensor.numpy()
        if array.dtype != _dtype(node["dtype"]):
            raise FileFormatError(f"{path}: the tensor {name!r} holds {array.dtype}, not "
                                  f"{_dtype(node['dtype'])}.")
        return array

    def _device(self, node, path):
        return torch.device(node["$device"])

    def _random_state(self, node, path):
        keys, pos, has_gauss, cached = node["$random_state"]
        rng = np.random.RandomState()
        rng.set_state(("MT19937", np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        return rng

    def _ref(self, node, path):
        return self.resolve(node["$ref"], path)


def _dtype(text):
    dtype = np.dtype(text)
    if dtype.kind not in "biufUO" or dtype.fields is not None:
        raise ValueError(f"dtype {text!r} is not one that dump writes")
    return dtype

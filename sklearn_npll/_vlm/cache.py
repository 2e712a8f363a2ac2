"""Identities and caches of the annotator's embeddings.

- :func:`model_digests`: digests of the whole state of a model's image tower
  and of the rest (the text side), computed once per loaded model (kept until
  a tensor of the model is replaced or changed in place).
- :func:`transform_key` / :func:`tokenizer_key`: identities of open_clip's
  preprocessing and tokenizers by their parameters; None for a callable whose
  behaviour cannot be told from the outside (a user function).
- :class:`DiskCache`: embeddings on disk, shard files that are checked when
  read (unreadable, non-finite or of another width: skipped with a warning
  naming the file, deleted, and their entries encoded again).
- :data:`TEXT_CACHE` and :func:`prompt_embeddings`: prompt embeddings of
  this process, shared by every annotator (clones in a grid search encode
  their prompts once), backed by the disk cache.
"""

import hashlib
import json
import os
import re
import threading
import time
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch

from .._digest import digest

_DIGESTS = weakref.WeakKeyDictionary()  # module -> (version stamp, digests)
_DIGEST_LOCK = threading.Lock()
_SIMPLE = (bool, int, float, str, type(None))


def strip_addresses(text):
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _stamp(state):
    """What changes when a tensor of the state is replaced or modified in place."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in state.values())


def _hash_tensor(h, name, t):
    t = t.detach()
    h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    if t.numel():
        flat = t.to("cpu").contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().data)


def model_digests(model):
    """``(image digest, text digest)`` of ``model``'s whole state.

    The image digest covers every tensor of the image tower (``model.visual``,
    or the whole model without one) and its structure (its module repr, which
    names activations such as QuickGELU); the text digest everything else.
    Computed once per model and reused until one of its tensors is replaced
    or modified in place.
    """
    state = model.state_dict(keep_vars=False)
    stamp = _stamp(state)
    with _DIGEST_LOCK:
        known = _DIGESTS.get(model)
        if known is not None and known[0] == stamp:
            return known[1]
    tower = getattr(model, "visual", None)
    prefix = "visual." if isinstance(tower, torch.nn.Module) else ""
    image = hashlib.sha256(type(model).__qualname__.encode())
    image.update(strip_addresses(repr(tower if prefix else model)).encode())
    text = hashlib.sha256(type(model).__qualname__.encode())
    text.update(strip_addresses(repr(model)).encode())
    for name, t in state.items():
        _hash_tensor(image if name.startswith(prefix) else text, name, t)
    digests = (image.hexdigest(), text.hexdigest())
    with _DIGEST_LOCK:
        _DIGESTS[model] = (stamp, digests)
    return digests


def _simple_value(v):
    if isinstance(v, _SIMPLE):
        return v
    if isinstance(v, (list, tuple)) and all(isinstance(x, _SIMPLE) for x in v):
        return list(v)
    if hasattr(v, "value") and isinstance(getattr(v, "value"), _SIMPLE):  # enums
        return f"{type(v).__name__}.{v.value}"
    if isinstance(v, torch.Tensor) and v.numel() <= 16:
        return v.tolist()
    raise TypeError


def _known_library(obj):
    module = getattr(obj, "__module__", None) or type(obj).__module__ or ""
    return module.split(".")[0] in ("open_clip", "torchvision")


def transform_key(transform):
    """A string that identifies an open_clip / torchvision preprocessing, or None.

    ``Compose`` pipelines are walked; torchvision and open_clip transforms are
    described by their class and parameters, their plain functions by name.
    Anything else (a user function or class, a lambda) has no key.
    """
    if transform is None:
        return None
    steps = getattr(transform, "transforms", None)
    if isinstance(steps, (list, tuple)) and _known_library(transform):
        parts = [transform_key(t) for t in steps]
        if any(p is None for p in parts):
            return None
        return f"{type(transform).__qualname__}[{', '.join(parts)}]"
    if not _known_library(transform):
        return None
    if callable(transform) and not isinstance(transform, type) and hasattr(transform, "__code__"):
        qualname = transform.__qualname__
        if "<" in qualname:  # lambdas and local functions
            return None
        return f"{transform.__module__}.{qualname}"
    params = {}
    for name, value in sorted(vars(transform).items()):
        if name.startswith("_") or name == "training":
            continue
        try:
            params[name] = _simple_value(value)
        except TypeError:
            return None
    cls = type(transform)
    return f"{cls.__module__}.{cls.__qualname__}({json.dumps(params, sort_keys=True)})"


def tokenizer_key(tokenizer):
    """A string that identifies an open_clip tokenizer by its parameters, or None."""
    if tokenizer is None or not _known_library(tokenizer):
        return None
    cls = type(tokenizer)
    params = {}
    for name, value in sorted(vars(tokenizer).items()):
        try:
            params[name] = _simple_value(value)
        except TypeError:
            continue  # vocabularies and caches: fixed by the class and the name
    return f"{cls.__module__}.{cls.__qualname__}({json.dumps(params, sort_keys=True)})"


def prompt_key(prompt):
    """Content key of a prompt."""
    return digest(prompt)


def key_of(info):
    """Digest of a JSON-able identity."""
    return digest(json.dumps(info, sort_keys=True))


class _TextCache:
    """Normalised prompt embeddings of this process, by (text identity, prompt)."""

    def __init__(self, max_entries=200_000):
        self._entries = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, key, prompt):
        with self._lock:
            return self._entries.get((key, prompt))

    def put(self, key, prompts, vectors):
        with self._lock:
            if len(self._entries) + len(prompts) > self.max_entries:
                self._entries.clear()
            for p, v in zip(prompts, vectors):
                self._entries[(key, p)] = v

    def clear(self):
        with self._lock:
            self._entries.clear()


#: Prompt embeddings shared by every annotator of the process.
TEXT_CACHE = _TextCache()


class DiskCache:
    """Embeddings on disk: one shard file per encoded batch.

    A shard ``<root>/<unique name>.npz`` holds the content keys and the
    embeddings of one batch. It is written under a temporary name and
    renamed, and never modified afterwards, so any number of processes
    (parallel folds of a grid search) can read and add shards at the same
    time without locks. A shard that cannot be read, holds non-finite values
    or vectors of another width than ``width`` is skipped with a warning
    naming the file and deleted; its entries count as misses, so they are
    encoded and stored again. ``width`` None takes the first shard's. :meth:`refresh` indexes the shards written
    since the last call.
    """

    def __init__(self, root, info, width):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.width = None if width is None else int(width)  # None: the first shard's
        self._index = {}  # key -> shard path
        self._seen = set()
        info_path = self.root / "model.json"
        if not info_path.exists():
            self._atomic_write(info_path, lambda f: f.write(json.dumps(info, indent=1).encode()))

    def _atomic_write(self, path, write):
        tmp = path.with_name(f".{path.name}.{os.getpid():x}-{os.urandom(4).hex()}.tmp")
        try:
            with open(tmp, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except OSError:  # full or read-only disk: the cache is an optimisation
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _read(self, path, vectors=True):
        """``(keys, embeddings or None)`` of a shard; a bad shard is dropped (None)."""
        try:
            with np.load(path, allow_pickle=False) as shard:
                keys = shard["keys"].tolist()
                emb = shard["embeddings"] if vectors else None
        except Exception as exc:  # noqa: BLE001 - zipfile, CRC, numpy and OS errors alike
            return self._drop(path, f"{type(exc).__name__}: {exc}")
        if emb is not None:
            if self.width is None and emb.ndim == 2:
                self.width = emb.shape[1]
            if emb.ndim != 2 or emb.shape != (len(keys), self.width):
                return self._drop(path, f"embeddings of shape {emb.shape}, expected "
                                        f"({len(keys)}, {self.width})")
            if not np.isfinite(emb).all():
                return self._drop(path, "non-finite embeddings")
        return keys, emb

    def _drop(self, path, reason):
        warnings.warn(
            f"Skipping the embedding-cache file {os.fspath(path)!r} ({reason}); it is "
            "deleted and its images are encoded again.",
            RuntimeWarning,
            stacklevel=4,
        )
        path = os.fspath(path)
        self._index = {k: p for k, p in self._index.items() if p != path}
        try:
            os.unlink(path)
        except OSError:
            pass
        return None

    def refresh(self):
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return
        for entry in entries:
            if not entry.name.endswith(".npz") or entry.name in self._seen:
                continue
            self._seen.add(entry.name)
            read = self._read(entry.path, vectors=False)
            if read is None:
                continue
            for key in read[0]:
                self._index.setdefault(key, entry.path)

    def lookup(self, key, memory):
        """Embedding of ``key`` or None; a hit loads its whole shard into ``memory``."""
        path = self._index.get(key)
        if path is None:
            return None
        read = self._read(path)
        if read is None:
            return None
        for k, vec in zip(read[0], read[1].astype(np.float32, copy=False)):
            memory.setdefault(k, vec)
        return memory.get(key)

    def add(self, keys, vectors):
        name = f"{time.time_ns():x}-{os.getpid():x}-{os.urandom(4).hex()}.npz"
        path = self.root / name
        keys = np.asarray(keys, dtype="U64")
        self._atomic_write(path, lambda f: np.savez(f, keys=keys, embeddings=vectors))
        self._seen.add(name)
        for key in keys.tolist():
            self._index.setdefault(key, str(path))


def prompt_embeddings(prompts, encode, key=None, identity=None, root=None, batch_size=256,
                      verbose=False):
    """Normalised embedding of every prompt, as a dict, through the text caches.

    Prompts are taken from :data:`TEXT_CACHE` under ``key``, then from the
    disk cache in the folder ``root`` (when not None); the rest are encoded
    by ``encode`` (list of prompts -> normalised numpy embeddings) in batches
    of ``batch_size``, with a progress bar when ``verbose``, and stored in
    both. ``key`` None (a text side without identity) caches nothing.
    """
    from tqdm.auto import tqdm

    unique = list(dict.fromkeys(prompts))
    found = {}
    disk = None
    if key is not None:
        for p in unique:
            vec = TEXT_CACHE.get(key, p)
            if vec is not None:
                found[p] = vec
        if root is not None and len(found) < len(unique):
            disk = DiskCache(root, identity, width=None)
            disk.refresh()
            shard = {}
            from_disk = []
            for p in unique:
                if p not in found:
                    vec = disk.lookup(prompt_key(p), shard)
                    if vec is not None:
                        found[p] = vec
                        from_disk.append(p)
            TEXT_CACHE.put(key, from_disk, [found[p] for p in from_disk])
    missing = [p for p in unique if p not in found]
    if missing:
        with tqdm(total=len(missing), unit="prompt", desc="Encoding prompts",
                  disable=not verbose) as bar:
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                vecs = encode(chunk)
                found.update(zip(chunk, vecs))
                if disk is not None:
                    disk.add([prompt_key(p) for p in chunk], vecs)
                bar.update(len(chunk))
        if key is not None:
            TEXT_CACHE.put(key, missing, [found[p] for p in missing])
    return found

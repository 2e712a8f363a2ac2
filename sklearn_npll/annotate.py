"""Candidate label sets proposed by a vision-language model.

:class:`VLMPartialAnnotator` is a scikit-learn transformer built on open_clip:
it scores every image against every (prompt template, class name) pair and
turns the scores into a candidate set per image, the input of a partial-label
classifier. It knows nothing about the classifier that follows it.

How a set is made, for class names ``n_1..n_C`` and templates ``T_1..T_d``:

- text embedding ``t_ij = normalise(encode_text(T_i(n_j)))``;
- image embedding ``r = normalise(encode_image(x))``;
- per template, scores ``s_i = logit_scale * r . t_i + logit_bias`` and
  probabilities ``p_i = softmax(s_i)`` (``sigmoid(s_i)`` for sigmoid models
  such as SigLIP, which have a logit bias);
- ``"multi_prompt"``: the union over templates of each template's top-1 class;
  ``"topk"``: the ``k`` classes of highest template-averaged probability;
  ``"prob_ratio"``: among those ``k``, the classes whose averaged probability
  is at least ``ratio`` times the top-1 probability.
"""

import collections
import hashlib
import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._candidates import _format_list
from ._inputs import AnnotatedImages, as_input_data
from .datasets import candidate_stats

__all__ = ["VLMPartialAnnotator", "SMALL_TEMPLATES"]

#: The 27 prompt templates of the reference annotator ("small" set).
SMALL_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)

# Seconds allowed to reach a download host before giving up on downloading.
_PROBE_TIMEOUT = 5.0
# Upper bound on the elements of one (rows, templates, classes) score block.
_SCORE_BLOCK = 1 << 22
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")
_hub_lock = threading.Lock()


# --------------------------------------------------------------------------
# Loading open_clip models, failing fast when offline
# --------------------------------------------------------------------------


def _describe(model_name, pretrained):
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return f"model_name={model_name!r}"
    return f"model_name={model_name!r}, pretrained={pretrained!r}"


def _offline_help(model_name, pretrained):
    if model_name.startswith("hf-hub:"):
        local = (
            "copy the hub repository (its open_clip_config.json and weights file) "
            "to a local folder and pass model_name='local-dir:/path/to/folder'"
        )
    else:
        local = (
            "pass the path of a checkpoint file for this architecture, e.g. "
            f"VLMPartialAnnotator(..., model_name={model_name!r}, "
            "pretrained='/path/to/open_clip_pytorch_model.bin') (.pt, .bin or "
            ".safetensors; a copy of the file open_clip downloads into the "
            "Hugging Face cache works)"
        )
    return (
        f"To work offline, {local}; or build the model yourself and pass "
        "model=, preprocess= and tokenizer=."
    )


class _DropOpenClipErrors(logging.Filter):
    """Hide open_clip's own error log lines during the cache-only attempt."""

    def filter(self, record):
        return "open_clip" not in (record.pathname or "")


def _reachable(url, timeout=_PROBE_TIMEOUT):
    """Whether a TCP connection to the host of ``url`` (or its proxy) opens in time.

    Runs in a daemon thread so that a slow name lookup cannot hold the caller
    longer than ``timeout`` seconds.
    """
    parts = urllib.parse.urlsplit(url)
    target = parts
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and parts.hostname and not urllib.request.proxy_bypass(parts.hostname):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    host = target.hostname
    if not host:
        return False
    port = target.port or (443 if target.scheme == "https" else 80)
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _hub_endpoint():
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:  # pragma: no cover - a dependency of open_clip
        return None


def _call_hub_offline(fn):
    """Run ``fn`` with the Hugging Face hub in offline mode (local cache only)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        return fn()
    root = logging.getLogger()
    log_filter = _DropOpenClipErrors()
    with _hub_lock:
        previous = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        root.addFilter(log_filter)
        try:
            return fn()
        finally:
            constants.HF_HUB_OFFLINE = previous
            root.removeFilter(log_filter)


def _looks_like_path(pretrained):
    text = os.fspath(pretrained)
    return (
        isinstance(pretrained, os.PathLike)
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or text.lower().endswith(_CHECKPOINT_SUFFIXES)
        or os.path.exists(text)
    )


def _chain_matches(exc, types, texts):
    """Whether ``exc`` or an exception it chains is one of ``types`` or mentions ``texts``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, types) or any(t in str(exc).lower() for t in texts):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _hub_errors():
    try:
        from huggingface_hub import errors
    except ImportError:  # pragma: no cover
        return (), ()
    return (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled), (errors.HfHubHTTPError,)


def _is_cache_miss(exc):
    """Whether ``exc`` says that a hub file is not in the local cache."""
    return _chain_matches(exc, _hub_errors()[0], ("offline mode", "local cache"))


def _is_download_error(exc):
    """Whether ``exc`` comes from downloading (network, hub, missing remote file)."""
    import urllib.error

    types = (*_hub_errors()[0], *_hub_errors()[1], urllib.error.URLError, ConnectionError,
             TimeoutError, socket.gaierror)
    return _chain_matches(exc, types, ("failed to download", "local cache"))


def _load_open_clip(model_name, pretrained, verbose=False):
    """Create ``(model, preprocess, tokenizer)`` the way a user would with open_clip.

    Everything is first loaded with the Hugging Face hub in offline mode
    (local files and cache only), so cached weights, configs and tokenizers
    never touch the network. When something is not cached, the download host
    is probed for a few seconds; if it cannot be reached an ``OSError``
    explains how to use a local checkpoint instead, rather than letting the
    downloader retry for minutes.
    """
    import open_clip

    kwargs = {}
    # configs and tokenizers may come from the hub on every route
    download_url = _hub_endpoint()
    direct_url = None
    if model_name.startswith(("hf-hub:", "local-dir:")):
        pass
    elif pretrained is not None and _looks_like_path(pretrained):
        path = os.fspath(pretrained)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"pretrained={path!r} is not a file. Give the path of an open_clip "
                f"checkpoint for model_name={model_name!r} (.pt, .bin or "
                ".safetensors), or a pretrained tag such as 'openai'."
            )
        pretrained = path
    elif pretrained is not None:
        if model_name not in open_clip.list_models():
            raise ValueError(
                f"model_name={model_name!r} is not an open_clip architecture. "
                f"Known names include {_format_list(open_clip.list_models(), 8)}; "
                "see open_clip.list_models()."
            )
        cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise ValueError(
                f"pretrained={pretrained!r} is neither a file nor a known tag for "
                f"model_name={model_name!r}; known tags: {_format_list(tags, 10)}."
            )
        if cfg.get("quick_gelu") and not open_clip.get_model_config(model_name).get(
            "quick_gelu", False
        ):
            # e.g. ViT-B-32 + 'openai': the weights were trained with QuickGELU.
            kwargs["force_quick_gelu"] = True
        if cfg.get("url") and not (cfg.get("hf_hub") and download_url):
            # a plain URL download (not blocked by the hub's offline mode)
            cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
            if not os.path.isfile(cached):
                direct_url = cfg["url"]

    def load():
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=None if pretrained is None else os.fspath(pretrained),
                **kwargs,
            )
        except RuntimeError as exc:
            if pretrained is not None and os.path.isfile(os.fspath(pretrained)):
                raise RuntimeError(
                    f"Could not load the checkpoint {os.fspath(pretrained)!r} into "
                    f"open_clip's {model_name!r} architecture: {exc}. Check that "
                    "model_name matches the checkpoint."
                ) from exc
            raise
        context_length = getattr(model, "context_length", None)
        tokenizer = open_clip.get_tokenizer(model_name, context_length=context_length)
        return model, preprocess, tokenizer

    def unreachable(host_url):
        host = urllib.parse.urlsplit(host_url).netloc or host_url
        return OSError(
            f"Could not load {_describe(model_name, pretrained)}: files it needs "
            "(weights, config or tokenizer) are not in the local cache and the "
            f"download host {host} cannot be reached (no network?). "
            + _offline_help(model_name, pretrained)
        )

    if direct_url is not None:
        if not _reachable(direct_url):
            raise unreachable(direct_url)
    elif download_url is not None:
        try:
            return _call_hub_offline(load)
        except Exception as exc:
            if not _is_cache_miss(exc):
                raise
            if not _reachable(download_url):
                raise unreachable(download_url) from exc
    if verbose:
        print(
            f"[VLMPartialAnnotator] downloading {_describe(model_name, pretrained)}",
            file=sys.stderr,
        )
    try:
        return load()
    except Exception as exc:
        if not _is_download_error(exc):
            raise
        raise OSError(
            f"Could not download {_describe(model_name, pretrained)}: {exc}. "
            + _offline_help(model_name, pretrained)
        ) from exc


# --------------------------------------------------------------------------
# Images: reading, hashing and the embedding cache
# --------------------------------------------------------------------------


def _is_pil(obj):
    from PIL import Image

    return isinstance(obj, Image.Image)


class _ImageSource:
    """Iterate any supported image input as RGB uint8 ``(H, W, 3)`` arrays.

    Lists of PIL images and lists of paths are read one by one, so they may
    mix image sizes (the model's preprocess resizes them); everything else
    goes through :func:`as_input_data`.
    """

    def __init__(self, X):
        if isinstance(X, AnnotatedImages):
            X = X.images
        self.items = None
        self.data = None
        if isinstance(X, (list, tuple)) and len(X) > 0:
            if all(_is_pil(x) for x in X):
                self.items, self.kind = list(X), "pil"
            elif all(isinstance(x, (str, os.PathLike)) for x in X):
                self.items, self.kind = [os.fspath(x) for x in X], "path"
        if self.items is None:
            data = as_input_data(X)
            if data.kind != "images":
                raise ValueError(
                    "VLMPartialAnnotator needs images, but X was read as feature "
                    f"vectors of shape {data.sample_shape}. Pass images as "
                    "(N, H, W), (N, H, W, C) or (N, C, H, W) arrays, PIL images or "
                    "file paths."
                )
            self.data = data

    def __len__(self):
        return len(self.items) if self.items is not None else len(self.data)

    def _read(self, i):
        from PIL import Image

        item = self.items[i]
        if self.kind == "pil":
            return np.asarray(item.convert("RGB"), dtype=np.uint8)
        try:
            with Image.open(item) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(
                f"Could not read image file {item!r} (sample {i}): "
                f"{type(exc).__name__}: {exc}. Check that the file exists and is "
                "an image PIL can open."
            ) from exc

    def chunk(self, start, stop, mapper=map):
        """Return the images ``start:stop`` as a list of ``(H, W, 3)`` uint8 arrays.

        ``mapper`` (``map`` or an executor's ``map``) reads files and PIL images.
        """
        if self.items is not None:
            return list(mapper(self._read, range(start, stop)))
        batch = self.data.get_batch(slice(start, stop))
        if batch.dtype != torch.uint8:
            batch = (batch.float().clamp(0, 1) * 255).round().to(torch.uint8)
        arr = batch.numpy()
        if arr.shape[1] == 1:
            arr = np.repeat(arr, 3, axis=1)
        elif arr.shape[1] > 3:
            arr = arr[:, :3]
        arr = np.ascontiguousarray(arr.transpose(0, 2, 3, 1))
        return list(arr)


def _image_key(img):
    """Content key of an ``(H, W, 3)`` uint8 image: sha1 of its shape and bytes."""
    h = hashlib.sha1(f"{img.shape[0]}x{img.shape[1]}x3:".encode())
    h.update(np.ascontiguousarray(img).data)
    return h.hexdigest()


def _strip_addresses(text):
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _weights_fingerprint(model):
    """Cheap fingerprint of the image tower: names, shapes and sampled values."""
    tower = getattr(model, "visual", model)
    state = list(tower.state_dict().items())
    h = hashlib.sha1(type(model).__name__.encode())
    for name, t in state:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    if state:
        picks = sorted({0, len(state) // 4, len(state) // 2, 3 * len(state) // 4, len(state) - 1})
        for i in picks:
            flat = state[i][1].detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            sample = flat[::step][:4096].to("cpu", torch.float32).contiguous()
            h.update(sample.numpy().tobytes())
    return h.hexdigest()


class _DiskCache:
    """Embeddings on disk: one shard file per encoded batch.

    A shard ``<root>/<unique name>.npz`` holds the content keys and the
    embeddings of one batch. It is written under a temporary name and
    renamed, and never modified afterwards, so any number of processes
    (parallel folds of a grid search) can read and add shards at the same
    time without locks; an unreadable shard is skipped. :meth:`refresh`
    indexes the shards written since the last call.
    """

    def __init__(self, root, info):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
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

    def refresh(self):
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return
        for entry in entries:
            if not entry.name.endswith(".npz") or entry.name in self._seen:
                continue
            self._seen.add(entry.name)
            try:
                with np.load(entry.path, allow_pickle=False) as shard:
                    keys = shard["keys"].tolist()
            except (OSError, ValueError, KeyError, EOFError):
                continue
            for key in keys:
                self._index.setdefault(key, entry.path)

    def lookup(self, key, memory):
        """Embedding of ``key`` or None; a hit loads its whole shard into ``memory``."""
        path = self._index.get(key)
        if path is None:
            return None
        try:
            with np.load(path, allow_pickle=False) as shard:
                keys, vectors = shard["keys"].tolist(), shard["embeddings"]
        except (OSError, ValueError, KeyError, EOFError):
            self._index = {k: p for k, p in self._index.items() if p != path}
            return None
        for k, vec in zip(keys, vectors.astype(np.float32, copy=False)):
            memory.setdefault(k, vec)
        return memory.get(key)

    def add(self, keys, vectors):
        name = f"{time.time_ns():x}-{os.getpid():x}-{os.urandom(4).hex()}.npz"
        path = self.root / name
        keys = np.asarray(keys, dtype="U40")
        self._atomic_write(path, lambda f: np.savez(f, keys=keys, embeddings=vectors))
        self._seen.add(name)
        for key in keys.tolist():
            self._index.setdefault(key, str(path))


class _Done:
    """A finished computation with the interface of a future."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _resolve_device(device):
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _module_device_dtype(module):
    for p in module.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _cpu_copy(module):
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=False)


# --------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------


class VLMPartialAnnotator(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Propose candidate label sets with a vision-language model (open_clip).

    ``fit`` loads the model and encodes every (template, class) prompt once;
    ``transform`` encodes the images and returns them with their candidate
    sets as an :class:`~sklearn_npll._inputs.AnnotatedImages`, which a
    partial-label classifier accepts as ``X``. No manual label is needed
    anywhere. Image embeddings are cached in memory and, with ``cache_dir``,
    on disk, keyed by the model and the pixel content, so annotating the same
    images again (a second ``transform``, every fold of a grid search) does
    not run the image tower again.

    Parameters
    ----------
    class_names : array-like of str of shape (n_classes,)
        The class names, written the way a caption would mention them
        (``"number 0"`` rather than ``"0"``). They are also ``classes_``.
    model_name : str, default="ViT-B-32"
        open_clip architecture (see ``open_clip.list_models()``), or a
        ``"hf-hub:org/repo"`` / ``"local-dir:/path"`` reference.
    pretrained : str or os.PathLike, default="openai"
        Weights: an open_clip tag (``open_clip.list_pretrained()``), the path
        of a local checkpoint file for ``model_name`` (``.pt``, ``.bin``,
        ``.safetensors``; loaded with
        ``open_clip.create_model_and_transforms(model_name, pretrained=path)``),
        or None for random weights (testing only). Ignored when ``model`` is
        given or ``model_name`` is a hub/local-dir reference. Weights named by
        a tag are taken from the local cache when present; otherwise they are
        downloaded, and if the download host cannot be reached within a few
        seconds ``fit`` raises an ``OSError`` explaining the offline options.
    templates : {"small", "imagenet"} or list of str or callable, default="small"
        Prompt templates: ``"small"`` is the 27-template reference set
        (:data:`SMALL_TEMPLATES`), ``"imagenet"`` open_clip's 80
        ``OPENAI_IMAGENET_TEMPLATES``; a list may hold strings with one
        ``{}`` placeholder for the class name, or callables mapping a class
        name to a prompt.
    mode : {"multi_prompt", "topk", "prob_ratio"}, default="multi_prompt"
        How a candidate set is made. ``"multi_prompt"``: union over templates
        of each template's top-1 class. ``"topk"``: the ``k`` classes with the
        highest template-averaged probability. ``"prob_ratio"``: among those
        ``k`` classes, those whose averaged probability is at least ``ratio``
        times the top-1 probability. Every set is non-empty.
    k : int, default=5
        Number of classes considered by ``"topk"`` (must not exceed the
        number of classes) and ``"prob_ratio"`` (clipped to it).
    ratio : float in (0, 1], default=0.5
        Threshold of ``"prob_ratio"``, relative to the top-1 probability.
    batch_size : int, default=256
        Images (and prompts) per forward pass.
    n_jobs : int, default=None
        Threads that read, hash and preprocess images while the model runs
        (decoding, resizing and tensor conversion release the GIL). None
        uses up to 8 (the number of CPUs if fewer); -1 all CPUs; 1 none.
    device : str or torch.device, default="auto"
        Where the model runs; ``"auto"`` picks CUDA when available.
    cache_dir : str or os.PathLike, default=None
        Directory of the on-disk embedding cache, shared by every instance
        (and clone) that points to it. One subdirectory per model, one small
        ``.npy`` file per image. None keeps the in-memory cache only.
    verbose : bool or int, default=False
        Print what is loaded and show a progress bar over the images.
    model : torch.nn.Module, default=None
        A ready model with ``encode_image`` and ``encode_text`` (an open_clip
        model, for instance); ``model_name`` and ``pretrained`` are then not
        used to load anything. ``fit`` sets it to eval mode and moves it to
        ``device``.
    preprocess : callable, default=None
        PIL image -> ``(3, H, W)`` tensor. Required with ``model`` unless the
        model carries open_clip's ``visual.preprocess_cfg``.
    tokenizer : callable, default=None
        List of prompts -> token tensor. With ``model`` and no tokenizer,
        ``open_clip.get_tokenizer(model_name)`` is used with the model's
        context length.
    synonyms : dict of str to list of str, default=None
        Extra names per class (``{"car": ["automobile"]}``). The text
        embeddings of a class's names are averaged for every template.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class names, in column order of the candidate matrix.
    templates_ : list of str
        The templates used, each with a ``{}`` placeholder.
    model_ : torch.nn.Module
        The vision-language model.
    preprocess_ : callable
        Its image preprocessing (PIL image -> tensor).
    tokenizer_ : callable
        Its tokenizer.
    text_features_ : ndarray of shape (n_templates, n_classes, embed_dim)
        Normalised text embedding of every (template, class) prompt.
    logit_scale_ : float
        The model's ``logit_scale.exp()`` (100 for a model without one).
    logit_bias_ : float or None
        The model's logit bias; not None for sigmoid models such as SigLIP.
    model_key_ : str
        Identity of the image tower and preprocess used in cache keys.
    votes_ : ndarray of shape (n_samples, n_templates)
        Per-template top-1 class indices of the last annotation.
    candidate_stats_ : dict
        :func:`~sklearn_npll.datasets.candidate_stats` of the last annotation.

    See Also
    --------
    sklearn_npll.datasets.candidate_stats : Summary of candidate sets.

    Notes
    -----
    Template averaging averages per-template probabilities, not embeddings.
    For softmax models ``p_i = softmax(logit_scale * r . t_i)``; for sigmoid
    models (those with a logit bias) every class gets an independent
    ``sigmoid(logit_scale * r . t_ij + logit_bias)``. ``predict_proba``
    returns the template average, renormalised to sum to one per row (a
    no-op for softmax models); top-k and ratio rules are unaffected by that
    renormalisation. A template's vote is the argmax of its scores.

    Embedding cache keys combine ``model_name``, ``pretrained``, a
    fingerprint of sampled image-tower weights (taken at ``fit``; refit after
    changing an injected model's weights), the preprocess and the sha1 of
    each image's RGB pixels and shape. ``transform`` returns a container, not
    an array, so ``set_output`` does not apply to it.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll.annotate import VLMPartialAnnotator
    >>> images = np.random.default_rng(0).integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
    >>> annotator = VLMPartialAnnotator(["cat", "dog", "car"])  # doctest: +SKIP
    >>> annotated = annotator.fit_transform(images)  # doctest: +SKIP
    >>> annotated.candidates.shape  # doctest: +SKIP
    (8, 3)
    >>> annotator.predict(images[:2])  # doctest: +SKIP
    array(['car', 'car'], dtype='<U3')
    """

    _parameter_constraints = {
        "class_names": ["array-like"],
        "model_name": [str],
        "pretrained": [str, os.PathLike, None],
        "templates": [StrOptions({"small", "imagenet"}), list, tuple],
        "mode": [StrOptions({"multi_prompt", "topk", "prob_ratio"})],
        "k": [Interval(Integral, 1, None, closed="left")],
        "ratio": [Interval(Real, 0, 1, closed="right")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "device": [str, torch.device],
        "cache_dir": [str, os.PathLike, None],
        "verbose": ["verbose"],
        "model": [torch.nn.Module, None],
        "preprocess": [callable, None],
        "tokenizer": [callable, None],
        "synonyms": [dict, None],
    }

    def __init__(
        self,
        class_names,
        model_name="ViT-B-32",
        pretrained="openai",
        templates="small",
        mode="multi_prompt",
        k=5,
        ratio=0.5,
        batch_size=256,
        n_jobs=None,
        device="auto",
        cache_dir=None,
        verbose=False,
        model=None,
        preprocess=None,
        tokenizer=None,
        synonyms=None,
    ):
        self.class_names = class_names
        self.model_name = model_name
        self.pretrained = pretrained
        self.templates = templates
        self.mode = mode
        self.k = k
        self.ratio = ratio
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.device = device
        self.cache_dir = cache_dir
        self.verbose = verbose
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.synonyms = synonyms

    # ---------------------------------------------------------------- checks

    def _check_class_names(self):
        names = self.class_names
        if isinstance(names, str):
            raise ValueError(
                "class_names must be a list of class names, got the single string "
                f"{names!r}."
            )
        names = [str(n) for n in np.asarray(names, dtype=object).reshape(-1)]
        if len(names) < 2:
            raise ValueError(
                f"class_names needs at least 2 classes to choose from, got {names}."
            )
        empty = [i for i, n in enumerate(names) if not n.strip()]
        if empty:
            raise ValueError(f"class_names has empty names at positions {empty[:5]}.")
        uniques, counts = np.unique(names, return_counts=True)
        if (counts > 1).any():
            raise ValueError(
                f"class_names contains duplicates: {_format_list(uniques[counts > 1])}."
            )
        return names

    def _resolve_templates(self):
        templates = self.templates
        if isinstance(templates, str):
            if templates == "small":
                return list(SMALL_TEMPLATES)
            from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

            return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
        templates = list(templates)
        if not templates:
            raise ValueError("templates is an empty list; give at least one template.")
        resolved = []
        for i, t in enumerate(templates):
            if isinstance(t, str):
                if t.count("{}") != 1:
                    raise ValueError(
                        f"templates[{i}]={t!r} must contain exactly one '{{}}' "
                        "placeholder for the class name, e.g. 'a photo of a {}'."
                    )
                resolved.append(t)
            elif callable(t):
                text = t("{}")
                if not isinstance(text, str) or "{}" not in text:
                    raise ValueError(
                        f"templates[{i}] is a callable that does not map a class "
                        f"name to a prompt string containing it (got {text!r})."
                    )
                resolved.append(text)
            else:
                raise TypeError(
                    f"templates[{i}] is a {type(t).__name__}; templates must be "
                    "strings with '{}' or callables."
                )
        return resolved

    def _check_synonyms(self, names):
        if not self.synonyms:
            return {}
        unknown = [c for c in self.synonyms if c not in names]
        if unknown:
            raise ValueError(
                f"synonyms has keys that are not class names: {_format_list(unknown)}."
            )
        out = {}
        for c, extra in self.synonyms.items():
            extra = [extra] if isinstance(extra, str) else list(extra)
            if not all(isinstance(e, str) and e.strip() for e in extra):
                raise ValueError(f"synonyms[{c!r}] must be a list of non-empty strings.")
            out[c] = extra
        return out

    # ------------------------------------------------------------------- fit

    def _log(self, message):
        if self.verbose:
            print(f"[VLMPartialAnnotator] {message}", file=sys.stderr)

    def _load_model(self):
        if self.model is not None:
            model = self.model
            preprocess = self.preprocess
            if preprocess is None:
                cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None)
                if not cfg:
                    raise ValueError(
                        "model was given without preprocess and carries no "
                        "visual.preprocess_cfg; pass preprocess= (PIL image -> "
                        "tensor), e.g. the third value returned by "
                        "open_clip.create_model_and_transforms."
                    )
                from open_clip.transform import PreprocessCfg, image_transform_v2

                preprocess = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
            tokenizer = self.tokenizer
            if tokenizer is None:
                import open_clip

                tokenizer = open_clip.get_tokenizer(
                    self.model_name, context_length=getattr(model, "context_length", None)
                )
            identity = {"model": f"injected {type(model).__name__}"}
        else:
            self._log(f"loading {self.model_name} / {self.pretrained}")
            model, preprocess, tokenizer = _load_open_clip(
                self.model_name, self.pretrained, verbose=self.verbose
            )
            if self.preprocess is not None:
                preprocess = self.preprocess
            if self.tokenizer is not None:
                tokenizer = self.tokenizer
            pretrained = self.pretrained
            if pretrained is not None and _looks_like_path(pretrained):
                pretrained = os.path.basename(os.fspath(pretrained))
            identity = {"model_name": self.model_name, "pretrained": pretrained}
        for name in ("encode_image", "encode_text"):
            if not callable(getattr(model, name, None)):
                raise TypeError(
                    f"The model ({type(model).__name__}) has no {name} method; give an "
                    "open_clip model or one with encode_image and encode_text."
                )
        identity["weights"] = _weights_fingerprint(model)
        identity["preprocess"] = _strip_addresses(repr(preprocess))
        return model, preprocess, tokenizer, identity

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Load the model and encode the text prompts.

        No image is processed: ``X`` and ``y`` are accepted for pipeline
        compatibility and ignored.

        Parameters
        ----------
        X : ignored
            Not used.
        y : ignored
            Not used.

        Returns
        -------
        self : VLMPartialAnnotator
            The fitted annotator.
        """
        names = self._check_class_names()
        templates = self._resolve_templates()
        synonyms = self._check_synonyms(names)
        if self.mode == "topk" and self.k > len(names):
            raise ValueError(
                f"k={self.k} exceeds the number of classes ({len(names)}) in "
                "mode='topk'; choose k <= n_classes."
            )
        model, preprocess, tokenizer, identity = self._load_model()
        device = _resolve_device(self.device)
        model.eval()
        model.to(device)

        self.model_ = model
        self.preprocess_ = preprocess
        self.tokenizer_ = tokenizer
        self.classes_ = np.asarray(names)
        self.templates_ = templates
        self.text_features_ = self._encode_prompts(names, templates, synonyms, device)
        scale = getattr(model, "logit_scale", None)
        self.logit_scale_ = (
            100.0 if scale is None else float(torch.as_tensor(scale).detach().exp().mean())
        )
        bias = getattr(model, "logit_bias", None)
        self.logit_bias_ = None if bias is None else float(torch.as_tensor(bias).detach().mean())
        key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        self._model_info = identity
        if getattr(self, "model_key_", None) != key or not hasattr(self, "_memory_cache"):
            self._memory_cache = {}
        self.model_key_ = key
        self._text_cache = None
        self._log(
            f"{len(templates)} templates x {len(names)} classes encoded "
            f"(logit scale {self.logit_scale_:.1f}"
            + ("" if self.logit_bias_ is None else f", sigmoid scores, bias {self.logit_bias_:.2f}")
            + ")"
        )
        return self

    def _encode_prompts(self, names, templates, synonyms, device):
        prompts, owner = [], []
        for ti, template in enumerate(templates):
            for ci, name in enumerate(names):
                for alias in [name, *synonyms.get(name, [])]:
                    prompts.append(template.replace("{}", alias))
                    owner.append(ti * len(names) + ci)
        feats = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                tokens = self.tokenizer_(prompts[start : start + self.batch_size])
                out = self.model_.encode_text(torch.as_tensor(tokens).to(device))
                feats.append(torch.nn.functional.normalize(out.float(), dim=-1).cpu())
        feats = torch.cat(feats)
        owner = torch.as_tensor(owner)
        n_pairs = len(templates) * len(names)
        summed = torch.zeros(n_pairs, feats.shape[1]).index_add_(0, owner, feats)
        summed = torch.nn.functional.normalize(summed, dim=-1)
        return summed.reshape(len(templates), len(names), -1).numpy()

    # ------------------------------------------------------------- embedding

    def _device(self):
        device = _resolve_device(self.device)
        current, _ = _module_device_dtype(self.model_)
        if current.type != device.type or (
            device.index is not None and current.index != device.index
        ):
            self.model_.to(device)
        return device

    def _disk_cache(self):
        if self.cache_dir is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model_name).strip("_")[:40]
        root = Path(self.cache_dir) / f"{slug}-{self.model_key_[:16]}"
        disk = getattr(self, "_disk", None)
        if disk is None or disk.root != root:
            disk = self._disk = _DiskCache(root, self._model_info)
        disk.refresh()
        return disk

    def _n_workers(self):
        if self.n_jobs is None:
            return min(8, os.cpu_count() or 1)
        if self.n_jobs < 0:
            return max(1, (os.cpu_count() or 1) + 1 + self.n_jobs)
        return self.n_jobs

    def _embed_images(self, X):
        """Normalised image embeddings ``(n, embed_dim)`` float32, through the caches.

        Images are read, hashed and looked up chunk by chunk; the misses are
        preprocessed by a thread pool and encoded in full batches by one
        model thread, so preprocessing the next chunk overlaps with encoding.
        """
        from PIL import Image
        from tqdm.auto import tqdm

        source = _ImageSource(X)
        n = len(source)
        device = self._device()
        _, dtype = _module_device_dtype(self.model_)
        memory = self._memory_cache
        disk = self._disk_cache()
        preprocess = self.preprocess_
        batch_size = self.batch_size
        out = None
        pending = {}  # key -> [preprocessed tensor, indices], not yet encoded
        waiting = {}  # key -> indices, in a batch being encoded
        inflight = collections.deque()  # (keys, future)

        def store(i, vec):
            nonlocal out
            if out is None:
                out = np.empty((n, vec.shape[0]), dtype=np.float32)
            out[i] = vec

        def encode(batch):
            with torch.inference_mode():
                feats = self.model_.encode_image(batch.to(device, dtype))
                return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()

        def finish():
            keys, future = inflight.popleft()
            feats = np.ascontiguousarray(future.result(), dtype=np.float32)
            if disk is not None:
                disk.add(keys, feats)
            for key, vec in zip(keys, feats):
                memory[key] = vec
                for i in waiting.pop(key):
                    store(i, vec)

        def submit():
            keys = list(pending)[:batch_size]
            batch = torch.stack([pending[k][0] for k in keys])
            for key in keys:
                waiting[key] = pending.pop(key)[1]
            if model_thread is None:
                inflight.append((keys, _Done(encode(batch))))
            else:
                inflight.append((keys, model_thread.submit(encode, batch)))
            while len(inflight) > 1:  # the previous batch; this one keeps running
                finish()

        def prepare(img):
            return preprocess(Image.fromarray(img))

        workers = self._n_workers()
        executor = ThreadPoolExecutor(workers) if workers > 1 else None
        model_thread = ThreadPoolExecutor(1) if workers > 1 else None

        def mapper(fn, items):
            """``map`` over a few contiguous parts in the pool (one task per part)."""
            items = list(items)
            if executor is None or len(items) < 2:
                return [fn(x) for x in items]
            size = -(-len(items) // workers)
            parts = [items[i : i + size] for i in range(0, len(items), size)]
            done = executor.map(lambda part: [fn(x) for x in part], parts)
            return [y for part in done for y in part]
        try:
            with tqdm(total=n, unit="img", desc="Annotating", disable=not self.verbose) as bar:
                for start in range(0, n, batch_size):
                    stop = min(n, start + batch_size)
                    images = source.chunk(start, stop, mapper)
                    misses = []
                    # hashing releases the GIL, but threads only pay off on large images
                    big = images[0].nbytes >= 1 << 16
                    keys = mapper(_image_key, images) if big else map(_image_key, images)
                    for offset, key in enumerate(keys):
                        i = start + offset
                        vec = memory.get(key)
                        if vec is None and disk is not None:
                            vec = disk.lookup(key, memory)
                        if vec is not None:
                            store(i, vec)
                        elif key in waiting:
                            waiting[key].append(i)
                        elif key in pending:
                            pending[key][1].append(i)
                        else:
                            pending[key] = [None, [i]]
                            misses.append((key, images[offset]))
                    tensors = mapper(prepare, [img for _, img in misses])
                    for (key, _), tensor in zip(misses, tensors):
                        pending[key][0] = tensor
                    while len(pending) >= batch_size:
                        submit()
                    bar.update(stop - start)
                while pending:
                    submit()
                while inflight:
                    finish()
        finally:
            for pool in (executor, model_thread):
                if pool is not None:
                    pool.shutdown()
        return out

    def _text_on(self, device):
        cached = getattr(self, "_text_cache", None)
        if cached is None or cached.device != device:
            cached = torch.from_numpy(self.text_features_).to(device)
            self._text_cache = cached
        return cached

    def _scores(self, X):
        """Per-template votes ``(n, d)`` and template-averaged scores ``(n, C)``."""
        emb = self._embed_images(X)
        device = self._device()
        text = self._text_on(device)
        n_templates, n_classes, _ = text.shape
        n = emb.shape[0]
        votes = np.empty((n, n_templates), dtype=np.int64)
        avg = np.empty((n, n_classes), dtype=np.float32)
        rows = max(1, _SCORE_BLOCK // (n_templates * n_classes))
        with torch.inference_mode():
            for start in range(0, n, rows):
                e = torch.from_numpy(emb[start : start + rows]).to(device)
                logits = self.logit_scale_ * torch.einsum("nd,tcd->ntc", e, text)
                if self.logit_bias_ is not None:
                    logits = logits + self.logit_bias_
                    probs = torch.sigmoid(logits)
                else:
                    probs = torch.softmax(logits, dim=-1)
                votes[start : start + rows] = logits.argmax(-1).cpu().numpy()
                avg[start : start + rows] = probs.mean(1).cpu().numpy()
        return votes, avg

    def _candidates(self, votes, avg):
        n, n_classes = avg.shape
        Y = np.zeros((n, n_classes), dtype=np.uint8)
        rows = np.arange(n)[:, None]
        if self.mode == "multi_prompt":
            Y[rows, votes] = 1
            return Y
        k = min(self.k, n_classes)
        top = np.argsort(-avg, axis=1, kind="stable")[:, :k]
        if self.mode == "topk":
            Y[rows, top] = 1
            return Y
        top_p = np.take_along_axis(avg, top, axis=1)
        keep = top_p >= self.ratio * top_p[:, :1]
        keep[:, 0] = True
        Y[np.broadcast_to(rows, top.shape)[keep], top[keep]] = 1
        return Y

    # ---------------------------------------------------------------- public

    def annotate(self, X):
        """Return the candidate matrix of ``X``.

        Also sets ``votes_`` and ``candidate_stats_``.

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
            Images, in any form :func:`~sklearn_npll._inputs.as_input_data`
            accepts (lists of PIL images or paths may mix sizes).

        Returns
        -------
        candidates : ndarray of shape (n_samples, n_classes), dtype uint8
            0/1 candidate matrix; columns follow ``classes_``.
        """
        check_is_fitted(self, "text_features_")
        votes, avg = self._scores(X)
        Y = self._candidates(votes, avg)
        self.votes_ = votes
        self.candidate_stats_ = candidate_stats(Y, classes=self.classes_)
        return Y

    def transform(self, X):
        """Annotate ``X``: its images with candidate sets and per-template votes.

        The annotation is deferred until the candidate sets are first read
        (``.candidates`` or ``.votes``). A classifier's ``predict`` reads only
        the images, so a fitted ``Pipeline`` predicts without running the
        vision-language model on new images; its ``score`` without labels
        reads the candidates and annotates. ``fit_transform`` annotates at
        once.

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
            Images, as for :meth:`annotate`.

        Returns
        -------
        annotated : AnnotatedImages
            ``images`` (``X`` as given), ``candidates`` (n_samples, n_classes)
            0/1, ``classes`` (``classes_``) and ``votes`` (n_samples,
            n_templates) class indices.
        """
        check_is_fitted(self, "text_features_")
        images = X.images if isinstance(X, AnnotatedImages) else X

        def annotate():
            return self.annotate(images), self.votes_

        return AnnotatedImages(images=images, classes=self.classes_, annotate=annotate)

    def fit_transform(self, X, y=None):
        """Fit, then annotate ``X`` at once (what a ``Pipeline``'s ``fit`` calls).

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
        y : ignored

        Returns
        -------
        annotated : AnnotatedImages
        """
        annotated = self.fit(X, y).transform(X)
        annotated.candidates  # noqa: B018 (annotate now, not later)
        return annotated

    def predict_proba(self, X):
        """Template-averaged zero-shot class probabilities.

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
            Images, as for :meth:`annotate`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Rows sum to one; columns follow ``classes_``.
        """
        check_is_fitted(self, "text_features_")
        _, avg = self._scores(X)
        return avg / avg.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Zero-shot class of each image: argmax of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like, list of PIL images, list of paths or Dataset
            Images, as for :meth:`annotate`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Class names from ``classes_``.
        """
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    # ----------------------------------------------------------- persistence

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_memory_cache", None)
        state.pop("_text_cache", None)
        state.pop("_disk", None)
        copies = {}
        for name in ("model", "model_"):
            module = state.get(name)
            if isinstance(module, torch.nn.Module):
                if _module_device_dtype(module)[0].type != "cpu":
                    if id(module) not in copies:
                        copies[id(module)] = _cpu_copy(module)
                    state[name] = copies[id(module)]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._memory_cache = {}
        self._text_cache = None
        self._disk = None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.target_tags.required = False
        tags.requires_fit = True
        return tags

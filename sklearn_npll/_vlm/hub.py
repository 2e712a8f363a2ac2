"""Loading open_clip models: local files and caches first, a bounded wait on the hub.

The loader never changes process-wide state (environment variables, the
Hugging Face hub's offline flag, logging filters): files already in the local
Hugging Face cache are found with ``huggingface_hub.try_to_load_from_cache``
and handed to open_clip as local paths. Only what is not cached goes to the
network, in a worker thread that the caller waits for at most ``timeout``
seconds, so a hub that accepts a connection and never answers cannot hold
``fit`` for minutes.
"""

import contextlib
import os
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request

from .._data.candidates import _format_list

# Seconds allowed to open a TCP connection to a download host.
_PROBE_TIMEOUT = 5.0
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")
# open_clip's file names inside a hub repository, preferred first.
_HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HF_CONFIG_FILE = "open_clip_config.json"
#: The extra that installs what Hugging Face tokenizer models need.
HF_EXTRA = "hf"


def describe(model_name, pretrained):
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return f"model_name={model_name!r}"
    return f"model_name={model_name!r}, pretrained={pretrained!r}"


def offline_help(model_name, pretrained):
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


def looks_like_path(pretrained):
    text = os.fspath(pretrained)
    return (
        isinstance(pretrained, os.PathLike)
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or text.lower().endswith(_CHECKPOINT_SUFFIXES)
        or os.path.exists(text)
    )


def _reachable(url, timeout):
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
    except ImportError:  # pragma: no cover - a dependency of open_clip
        return None
    return constants.ENDPOINT


def _cached_hub_file(repo_id, filenames):
    """Path of the first of ``filenames`` in the local hub cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for filename in filenames:
        path = try_to_load_from_cache(repo_id, filename)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _chain_matches(exc, types, texts):
    """Whether ``exc`` or an exception it chains is one of ``types`` or mentions ``texts``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, types) or any(t in str(exc).lower() for t in texts):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _is_download_error(exc):
    """Whether ``exc`` comes from downloading (network, hub, missing remote file)."""
    import urllib.error

    types = [urllib.error.URLError, ConnectionError, TimeoutError, socket.gaierror]
    try:
        from huggingface_hub import errors

        types += [errors.LocalEntryNotFoundError, errors.HfHubHTTPError]
    except ImportError:  # pragma: no cover
        pass
    return _chain_matches(exc, tuple(types), ("failed to download", "local cache"))


def _missing_module(exc):
    """Name of the top-level module whose import failed in ``exc``'s chain, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImportError) and getattr(exc, "name", None):
            return exc.name.split(".")[0]
        exc = exc.__cause__ or exc.__context__
    return None


def needs_transformers(model_name):
    """Whether open_clip needs ``transformers`` for this architecture's text side."""
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return False  # the config is only known after reading it
    import open_clip

    text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
    return bool(
        text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")
        or "siglip" in model_name.lower()
    )


def missing_extra_error(model_name):
    return ImportError(
        f"model_name={model_name!r} uses a Hugging Face tokenizer (or text model), "
        "which needs the 'transformers' package. Install the optional extra: "
        f"pip install \"sklearn-npll[{HF_EXTRA}]\"."
    )


def check_transformers(model_name):
    """Raise a clear ImportError when the model needs ``transformers`` and it is missing."""
    if not needs_transformers(model_name):
        return
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise missing_extra_error(model_name)


def _run_with_deadline(fn, seconds):
    """``fn()`` in a daemon thread; ``(True, result)`` or ``(False, None)`` after ``seconds``.

    An exception of ``fn`` is raised here. A thread still waiting on the
    network when the deadline passes is left to finish in the background.
    """
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="npll-hub-download", daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if thread.is_alive():
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box["value"]


def _check_pretrained(model_name, pretrained):
    """``(pretrained, cfg, options, url)``: ``pretrained`` checked against open_clip.

    A checkpoint path must be a file (it comes back as a string); a tag must
    be one open_clip knows for ``model_name``, and ``cfg`` is its pretrained
    config (None for anything else). ``options`` are the keyword arguments
    the weights need (QuickGELU for weights trained with it) and ``url`` the
    host a download would reach.
    """
    import open_clip

    options = {}
    url = _hub_endpoint()  # configs and tokenizers may come from the hub
    if model_name.startswith(("hf-hub:", "local-dir:")) or pretrained is None:
        return pretrained, None, options, url
    if looks_like_path(pretrained):
        path = os.fspath(pretrained)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"pretrained={path!r} is not a file. Give the path of an open_clip "
                f"checkpoint for model_name={model_name!r} (.pt, .bin or "
                ".safetensors), or a pretrained tag such as 'openai'."
            )
        return path, None, options, url
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
        options["force_quick_gelu"] = True
    if cfg.get("url") and not (cfg.get("hf_hub") and url):
        url = cfg["url"]
    return pretrained, cfg, options, url


def _cached_hub_repo(model_name):
    """The ``local-dir:`` route of an ``hf-hub:`` repository whose config and
    weights are both in the local Hugging Face cache, or None."""
    repo_id = model_name[len("hf-hub:"):]
    config = _cached_hub_file(repo_id, (_HF_CONFIG_FILE,))
    weights = _cached_hub_file(repo_id, _HF_WEIGHT_FILES)
    if config and weights and os.path.dirname(config) == os.path.dirname(weights):
        return "local-dir:" + os.path.dirname(config), None, {}
    return None


def _cached_tag_weights(model_name, cfg):
    """The route of a pretrained tag whose hub weights are in the local Hugging
    Face cache: the cached file's path, with the tag's preprocessing; or None."""
    if cfg is None or not cfg.get("hf_hub"):
        return None
    # "org/repo/file.bin", or "org/repo/" for open_clip's default file names
    repo_id, filename = os.path.split(cfg["hf_hub"])
    names = (filename,) if filename else _HF_WEIGHT_FILES
    if filename.endswith((".bin", ".pth")):
        names = (filename[:-4] + ".safetensors", filename)
    path = _cached_hub_file(repo_id, names)
    if path is None:
        return None
    # the preprocessing open_clip would take from the tag
    overrides = {f"image_{k}": cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                 if cfg.get(k) is not None}
    return model_name, path, overrides


def _local_route(model_name, pretrained, cfg):
    """``(name, weights, extra kwargs)`` for :func:`_create` that read only local
    files, or None when the network is needed.

    Checkpoint files, ``local-dir:`` folders and ``pretrained=None`` are
    local as given, and so is a tag whose weights open_clip keeps in
    ``~/.cache/clip``; cached hub files are found by :func:`_cached_hub_repo`
    and :func:`_cached_tag_weights`.
    """
    if model_name.startswith("hf-hub:"):
        return _cached_hub_repo(model_name)
    if pretrained is not None and os.path.isfile(os.fspath(pretrained)):
        return model_name, pretrained, {}
    if model_name.startswith("local-dir:") or pretrained is None:
        return model_name, pretrained, {}
    if cfg is not None and cfg.get("url") and not cfg.get("hf_hub"):
        cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        return (model_name, pretrained, {}) if os.path.isfile(cached) else None
    return _cached_tag_weights(model_name, cfg)


def _create(model_name, options, name, weights, extra):
    """``(model, preprocess, tokenizer)`` from open_clip for ``name`` and ``weights``.

    ``options`` and ``extra`` are keyword arguments of
    ``create_model_and_transforms``; ``model_name`` is the architecture the
    user asked for, named when a checkpoint file does not fit it.
    """
    import open_clip

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None if weights is None else os.fspath(weights),
            **options, **extra,
        )
    except RuntimeError as exc:
        if weights is not None and os.path.isfile(os.fspath(weights)):
            raise RuntimeError(
                f"Could not load the checkpoint {os.fspath(weights)!r} into "
                f"open_clip's {model_name!r} architecture: {exc}. Check that "
                "model_name matches the checkpoint."
            ) from exc
        raise
    context_length = getattr(model, "context_length", None)
    tokenizer = open_clip.get_tokenizer(name, context_length=context_length)
    return model, preprocess, tokenizer


@contextlib.contextmanager
def _clear_errors(model_name, pretrained):
    """Raise a missing-extra error, or a download error that explains the
    offline options, in place of the error it comes from; others pass."""
    try:
        yield
    except Exception as exc:
        if _missing_module(exc) == "transformers":
            raise missing_extra_error(model_name) from exc
        if not _is_download_error(exc):
            raise
        raise OSError(
            f"Could not download {describe(model_name, pretrained)}: {exc}. "
            + offline_help(model_name, pretrained)
        ) from exc


def _download(model_name, pretrained, options, url, timeout, started, verbose):
    """Load from the network: probe ``url``'s host, then give the download
    what is left of ``timeout`` seconds counted from ``started``."""
    host = urllib.parse.urlsplit(url or "").netloc or url
    if not url or not _reachable(url, min(_PROBE_TIMEOUT, timeout)):
        raise OSError(
            f"Could not load {describe(model_name, pretrained)}: files it needs "
            "(weights, config or tokenizer) are not in the local cache and the "
            f"download host {host} cannot be reached (no network?). "
            + offline_help(model_name, pretrained)
        )
    if verbose:
        print(f"[VLMPartialAnnotator] downloading {describe(model_name, pretrained)}",
              file=sys.stderr)
    left = timeout - (time.monotonic() - started)
    with _clear_errors(model_name, pretrained):
        done, result = _run_with_deadline(
            lambda: _create(model_name, options, model_name, pretrained, {}), left)
    if not done:
        raise OSError(
            f"Could not load {describe(model_name, pretrained)}: the download host "
            f"{host} accepted the connection but the download did not finish within "
            f"hub_timeout={timeout:g} s. Raise hub_timeout for a slow connection. "
            + offline_help(model_name, pretrained)
        )
    return result


def load_open_clip(model_name, pretrained, timeout=60.0, verbose=False):
    """Create ``(model, preprocess, tokenizer)`` the way a user would with open_clip.

    Local checkpoint files, ``local-dir:`` folders and weights already in the
    local Hugging Face cache are loaded without the network. Otherwise the
    download host is probed, and the download gets at most ``timeout``
    seconds in all before an ``OSError`` explains the offline options.
    """
    check_transformers(model_name)
    started = time.monotonic()
    pretrained, cfg, options, url = _check_pretrained(model_name, pretrained)
    local = _local_route(model_name, pretrained, cfg)
    if local is None:
        return _download(model_name, pretrained, options, url, timeout, started, verbose)
    with _clear_errors(model_name, pretrained):
        return _create(model_name, options, *local)

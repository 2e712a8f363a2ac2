"""Save and load fitted estimators without pickle.

:func:`dump` writes one `safetensors <https://huggingface.co/docs/safetensors>`_
file: its tensors are the weights of the networks (``modules.<network>.<key>``)
and the fitted arrays (``values.<path>``); its metadata holds one JSON
document with the format version, the library version, the estimator class,
its constructor parameters, its fitted attributes and its history. Classes
and functions among the parameters (``module``, ``optimizer``, ...) are
stored by dotted name.

:func:`load` reads the file with safetensors' own parser and the JSON with
``json``; nothing is unpickled, evaluated or imported. A class or function
the file names is looked up in an allowlist (the library's estimators and
backbones, ``torch.optim`` optimizers, ``torch.nn`` modules) or among the
names the caller passes as ``trusted``; any other name is refused before
anything is built. So a file from an unknown source cannot run code when it
is loaded, unlike pickle, joblib and skops files of these models.
"""

import inspect
import json
import os
import re
import warnings

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from skorch.history import History
from torch import nn

from ._estimator.base import PartialLabelNet
from ._runtime import resolve_device
from ._estimator.skorch_compat import (registered_criteria, registered_modules,
                                      registered_optimizers)
from ._io_codec import (Decoder, Encoder, FileFormatError, Unstorable, UntrustedNameError,
                        allowlist, import_dotted, reference_name, references)
from .annotate import VLMPartialAnnotator

__all__ = ["FileFormatError", "UntrustedNameError", "dump", "load"]

FORMAT = "sklearn_npll.io"
FORMAT_VERSION = 1
_METADATA_KEY = "sklearn_npll"
# parameters that only training uses: left out (with a warning) when they
# hold objects that have no JSON form
_TRAINING_ONLY = ("callbacks", "weak_augment", "strong_augment")
# skorch's bookkeeping, built again by initialize() when loading
_SKORCH_ATTRIBUTES = {"history_", "callbacks_", "initialized_", "virtual_params_",
                      "init_context_", "prefixes_", "cuda_dependent_attributes_", "device_"}
# private fitted attributes the networks are built from
_PRIVATE_FITTED = ("_seed_",)
_FITTED_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*[A-Za-z0-9]_$")


# ------------------------------------------------------------------ writing
def dump(estimator, path, *, keep_training_state=None):
    """Save a fitted estimator to one file that loads without pickle.

    Parameters
    ----------
    estimator : CoRegClassifier, PRODENClassifier, CCClassifier or VLMPartialAnnotator
        A fitted estimator.
    path : str or path-like
        The file to write (by convention ``.safetensors``).
    keep_training_state : bool or None, default=None
        Also save what only training needs (every network and state module,
        the optimizer's state, the random generator states), so that the
        loaded classifier can train on with ``partial_fit`` or
        ``warm_start=True`` exactly as the original would. None follows the
        estimator's ``keep_training_state`` parameter, as pickling does;
        otherwise only what ``predict`` uses is saved. Not used for the
        annotator.

    Raises
    ------
    ValueError
        A parameter or fitted attribute that has no JSON form and is needed
        to predict (an ``nn.Module`` instance as ``module``, a lambda, an
        object of your own), named in the message.

    Warns
    -----
    UserWarning
        When ``callbacks``, ``weak_augment`` or ``strong_augment`` hold such
        objects: they only affect training and are left out (the loaded
        estimator has their defaults).

    Notes
    -----
    The annotator's vision-language model is not saved: the file keeps its
    ``model_name`` and ``pretrained``, and a loaded annotator loads the
    model again when it first encodes images, checking that its image tower
    is the one it was fitted with. An annotator given ``model=`` cannot be
    saved this way.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll import CCClassifier
    >>> from sklearn_npll.io import dump, load
    >>> X = np.random.RandomState(0).normal(size=(40, 3)).astype("float32")
    >>> clf = CCClassifier(max_epochs=1, batch_size=16, random_state=0).fit(X, X[:, 0] > 0)
    >>> dump(clf, "clf.safetensors")                      # doctest: +SKIP
    >>> again = load("clf.safetensors")                   # doctest: +SKIP
    >>> np.array_equal(again.predict_proba(X), clf.predict_proba(X))  # doctest: +SKIP
    True
    """
    from . import __version__

    tensors = {}
    encode = Encoder(tensors)
    if isinstance(estimator, VLMPartialAnnotator):
        body = _annotator_body(estimator, encode)
    elif isinstance(estimator, PartialLabelNet):
        body = _classifier_body(estimator, encode, keep_training_state)
    else:
        raise TypeError(
            f"dump saves the estimators of sklearn_npll (CoRegClassifier, PRODENClassifier, "
            f"CCClassifier, VLMPartialAnnotator); got {type(estimator).__name__}.")
    name = reference_name(type(estimator))
    if name is None:
        raise ValueError(f"{type(estimator).__qualname__} is not importable by name (a class "
                         "defined inside a function?); define it at the top of a module.")
    document = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "library_version": __version__, "estimator": name, **body}
    save_file(tensors, os.fspath(path),
              metadata={_METADATA_KEY: json.dumps(document, allow_nan=False)})


def _classifier_body(est, encode, keep_training_state):
    if not getattr(est, "initialized_", False) or not hasattr(est, "classes_"):
        raise NotFittedError(
            f"This {type(est).__name__} is not fitted (or its last fit diverged): fit it "
            "before dump.")
    keep = est.keep_training_state if keep_training_state is None else keep_training_state
    if keep and getattr(est, "_training_state_dropped", False):
        raise ValueError(
            f"This {type(est).__name__} was pickled or trimmed without its training state; "
            "it cannot be saved with keep_training_state=True. Dump it with "
            "keep_training_state=False, or fit it again.")
    body = {"params": _encode_params(est, encode),
            "fitted": {name: _encode(encode, value, f"fitted.{name}", est)
                       for name, value in _fitted_attributes(est).items()},
            "history": _encode(encode, list(est.history_), "history", est),
            "training_state": None}
    if keep:
        modules = {name: getattr(est, name + "_") for name in registered_modules(est)}
        body["training_state"] = {
            "optimizers": {name: encode(getattr(est, name + "_").state_dict(),
                                        f"optimizers.{name}")
                           for name in registered_optimizers(est)},
            "random_states": encode(getattr(est, "_random_states", None), "random_states")}
    else:
        inference = {id(net) for net in est.inference_networks()}
        modules = {name: getattr(est, name + "_").for_prediction()
                   for name in registered_modules(est)
                   if id(getattr(est, name + "_")) in inference}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            encode.tensor(f"modules.{name}.{key}", value)
    body["modules"] = list(modules)
    return body


def _fitted_attributes(est):
    """Public fitted attributes, and the private ones the networks are built
    from; not skorch's bookkeeping, networks or optimizers."""
    components = {name + "_" for name in [*registered_modules(est), *registered_optimizers(est),
                                          *registered_criteria(est)]}
    fitted = {name: value for name, value in vars(est).items()
              if _FITTED_NAME.match(name) and "__" not in name
              and name not in components | _SKORCH_ATTRIBUTES}
    fitted.update({name: getattr(est, name) for name in _PRIVATE_FITTED if hasattr(est, name)})
    return fitted


def _encode_params(est, encode):
    params, dropped = {}, []
    for name, value in est.get_params(deep=False).items():
        if name in _TRAINING_ONLY or name.startswith("callbacks__"):
            try:
                params[name] = encode(value, f"params.{name}")
            except Unstorable:
                dropped.append(name)
        else:
            params[name] = _encode(encode, value, f"params.{name}", est)
    if "callbacks" in dropped:  # their callbacks__* settings name callbacks left out
        dropped += [name for name in params if name.startswith("callbacks__")]
    for name in dropped:
        params.pop(name, None)
    if dropped:
        warnings.warn(
            f"dump left out the parameter(s) {dropped} of {type(est).__name__}: they hold "
            "objects that cannot be stored without pickle (callback objects, augmentation "
            "transforms, lambdas) and only affect training. The loaded estimator predicts "
            "the same, with their defaults; set them again with set_params before training "
            "it further.", UserWarning, stacklevel=4)
    return params


def _encode(encode, value, path, est):
    """``encode(value, path)``, with a message that says what to do when the
    value has no JSON form."""
    try:
        return encode(value, path)
    except Unstorable as exc:
        raise ValueError(_unstorable_message(est, path, exc.path, exc.value)) from None


def _unstorable_message(est, path, where, value):
    kind, name = path.split(".")[0], path.split(".", 1)[1]
    what = {"params": f"the parameter {name!r}", "state": f"{name!r}",
            "fitted": f"the fitted attribute {name!r}"}.get(kind, f"its {name}")
    if isinstance(value, nn.Module) and path == "params.module":
        hint = ("pass the encoder's class and its arguments instead (module=MyEncoder, "
                "module__width=64, ...): dump stores a class by name")
    elif isinstance(est, VLMPartialAnnotator) and kind == "state" \
            and name.rstrip("_") in ("model", "preprocess", "tokenizer"):
        hint = ("dump stores the vision-language model by name only: create the annotator "
                "with model_name= and pretrained= instead of model, preprocess or tokenizer "
                "objects")
    elif getattr(value, "__name__", None) == "<lambda>" or "<locals>" in getattr(
            value, "__qualname__", ""):
        hint = ("a lambda or a function defined inside another function has no importable "
                "name: define it at the top of a module")
    else:
        hint = ("only numbers, strings, lists, tuples, dicts, arrays, tensors, RandomState "
                "and classes or functions importable by name are stored")
    return (f"Cannot save {what} of {type(est).__name__} without pickle: {where} is a "
            f"{type(value).__name__} object; {hint}. (pickle and joblib save anything, but "
            "their files run code when loaded: load them only from a trusted source.)")


def _annotator_body(est, encode):
    check_is_fitted(est, "text_features_")
    # what pickling keeps: no caches, and no model loaded from model_name
    state = est.__getstate__()
    return {"state": {name: _encode(encode, value, f"state.{name}", est)
                      for name, value in state.items()}}


# ------------------------------------------------------------------ reading
def load(path, *, trusted=None, device="cpu"):
    """Load an estimator saved by :func:`dump`, without unpickling anything.

    The file is read with safetensors' parser and its JSON document with
    ``json``. Every class or function the document names must be in the
    allowlist (the library's estimators and backbones, ``torch.optim``
    optimizers, ``torch.nn`` modules) or in ``trusted``; otherwise loading
    stops before anything is imported or built.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`dump`.
    trusted : list of str or of classes and functions, default=None
        Names outside the allowlist that you trust the file to import and call
        (your own encoder class, say ``"mypackage.nets.MyEncoder"``), or the
        objects themselves. Trust only names you know: a file can name any
        function, ``os.system`` included.
    device : str or torch.device, default="cpu"
        Where the loaded estimator computes: a classifier's networks go there
        (its ``device`` parameter is kept as saved); an annotator's ``device``
        parameter is set to it. ``"auto"`` picks CUDA when available.

    Returns
    -------
    estimator : CoRegClassifier, PRODENClassifier, CCClassifier or VLMPartialAnnotator
        Fitted; it predicts exactly as the saved one did. Saved without its
        training state, a classifier predicts but cannot train on, as after
        an ordinary pickle.

    Raises
    ------
    FileFormatError
        The file was not written by :func:`dump` (a pickle, a ``torch.save``
        archive, another tool's file), is damaged or truncated, is in another
        format version, or its tensors do not fit the networks.
    UntrustedNameError
        The file names classes or functions outside the allowlist and
        ``trusted``; the message lists them.

    Examples
    --------
    >>> from sklearn_npll.io import load
    >>> clf = load("clf.safetensors")                               # doctest: +SKIP
    >>> clf = load("clf.safetensors",
    ...            trusted=["mypackage.nets.MyEncoder"])            # doctest: +SKIP
    """
    document, tensors = _read(path)
    resolve = _resolver(document, trusted, path)
    cls = resolve(document["estimator"], "estimator")
    decode = Decoder(tensors, resolve)
    if isinstance(cls, type) and issubclass(cls, VLMPartialAnnotator):
        estimator = _load_annotator(cls, document, decode, device)
    elif isinstance(cls, type) and issubclass(cls, PartialLabelNet):
        estimator = _load_classifier(cls, document, decode, device)
    else:
        raise FileFormatError(f"{os.fspath(path)!r} names {document['estimator']!r} as its "
                              "estimator, which is not one of sklearn_npll's estimators.")
    unused = sorted(set(tensors) - decode.used)
    if unused:
        raise FileFormatError(f"{os.fspath(path)!r} holds tensors that its description does "
                              f"not name: {unused[:5]} (edited, or written by another tool).")
    return estimator


def _read(path):
    """The JSON document and the tensors of a file, read without pickle."""
    from . import __version__

    where = repr(os.fspath(path))
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as exc:
        kind = (" (it is a zip archive, as torch.save and skops write)" if head == b"PK\x03\x04"
                else " (it is a pickle)" if head[:1] == b"\x80" else "")
        raise FileFormatError(
            f"{where} is not a file written by sklearn_npll.io.dump{kind}, or it is damaged or "
            f"truncated: {exc}.") from None
    if _METADATA_KEY not in metadata:
        raise FileFormatError(
            f"{where} is a safetensors file without sklearn_npll's description of an "
            "estimator (weights written by another tool?); load files written by "
            "sklearn_npll.io.dump.")
    try:
        document = json.loads(metadata[_METADATA_KEY], parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise FileFormatError(f"The description in {where} is not valid JSON: {exc}.") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise FileFormatError(f"{where} is not a file written by sklearn_npll.io.dump.")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise FileFormatError(
            f"{where} is in format version {version!r} (written by sklearn_npll "
            f"{document.get('library_version')!r}); this sklearn_npll ({__version__}) reads "
            f"format version {FORMAT_VERSION}. Load it with the version that wrote it and "
            "save the estimator again, or upgrade sklearn_npll.")
    return document, tensors


def _require(document, *keys):
    missing = [key for key in keys if key not in document]
    if missing:
        raise FileFormatError(f"The file's description lacks {missing} (damaged or edited).")


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _resolver(document, trusted, path):
    """A function resolving dotted names through the allowlist and
    ``trusted``, after checking every name the document holds."""
    allowed, trusted = allowlist(), _trusted(trusted)
    estimator = document.get("estimator")
    if not isinstance(estimator, str):
        raise FileFormatError(f"{os.fspath(path)!r} names no estimator class.")
    found = [(estimator, "estimator"), *references(document)]
    untrusted = [(name, where) for name, where in found
                 if name not in allowed and name not in trusted]
    if untrusted:
        listed = "; ".join(f"{name!r} (as {where})" for name, where in untrusted)
        raise UntrustedNameError(
            f"{os.fspath(path)!r} names classes or functions outside sklearn_npll.io's "
            f"allowlist: {listed}. Loading would import and call them. If you know them "
            "(your own encoder class, say), pass load(..., trusted=[...]) with those names; "
            "never trust a name you do not recognise, such as os.system or builtins.eval.")

    def resolve(name, where):
        if not isinstance(name, str):
            raise FileFormatError(f"{where}: {name!r} is not a dotted name.")
        if name in allowed:
            return allowed[name]
        return import_dotted(name) if trusted[name] is None else trusted[name]

    return resolve


def _trusted(trusted):
    """``{dotted name: object, or None to import}`` from ``trusted``."""
    if trusted is None:
        return {}
    if isinstance(trusted, str):
        raise TypeError(f"trusted must be a list of names, not the string {trusted!r}.")
    names = {}
    for item in trusted:
        name = item if isinstance(item, str) else reference_name(item)
        if name is None:
            raise TypeError(f"trusted holds {item!r}, which is neither a dotted name nor a "
                            "class or function importable by name.")
        names[name] = None if isinstance(item, str) else item
    return names


def _load_classifier(cls, document, decode, device):
    _require(document, "params", "fitted", "history", "modules", "training_state")
    params = _checked(cls, decode(document["params"], "params"), "params")
    estimator = cls(**params)
    fitted = _checked(cls, decode(document["fitted"], "fitted"), "fitted", _PRIVATE_FITTED)
    for name, value in fitted.items():
        setattr(estimator, name, value)
    estimator.device_ = str(resolve_device(device))
    estimator.initialize()
    training = document["training_state"]
    for name in document["modules"]:
        if name not in registered_modules(estimator):
            raise FileFormatError(f"The file holds the weights of {name!r}, which "
                                  f"{cls.__name__} does not have "
                                  f"({registered_modules(estimator)}).")
        module = getattr(estimator, name + "_")
        _load_state(module if training else module.for_prediction(), name, decode)
    estimator.history_ = History(decode(document["history"], "history"))
    if training is None:
        return estimator.trim_for_prediction()
    missing = [name for name in registered_modules(estimator)
               if name not in document["modules"]]
    if missing:
        raise FileFormatError(f"The file's training state lacks the networks {missing}.")
    for name in registered_optimizers(estimator):
        state = decode(training["optimizers"][name], f"optimizers.{name}")
        getattr(estimator, name + "_").load_state_dict(state)
    states = decode(training["random_states"], "random_states")
    if states is not None:
        estimator._random_states = states
    return estimator


def _checked(cls, values, where, private=()):
    """``values``, refusing any name that is not a plain public attribute
    (or one of ``private``; any single-underscore name with ``private=None``),
    or that would hide one of the class's own (``predict``, ``__class__``)
    or skorch's bookkeeping."""
    init = inspect.signature(cls.__init__).parameters
    for name in values:
        plain = isinstance(name, str) and name.isidentifier() and not name.startswith("__")
        hidden = name.startswith("_") and not (private is None or name in private)
        if not plain or hidden or name in _SKORCH_ATTRIBUTES \
                or (hasattr(cls, name) and name not in init):
            raise FileFormatError(f"{where}: {name!r} is not an attribute that dump writes.")
    return values


def _load_state(module, name, decode):
    """Load the tensors ``modules.<name>.*`` into ``module``, refusing any
    missing, extra, or mis-shaped or mis-typed one."""
    prefix = f"modules.{name}."
    given = {key[len(prefix):]: tensor for key, tensor in decode.tensors.items()
             if key.startswith(prefix)}
    expected = module.state_dict()
    problems = [f"{key} is missing" for key in expected if key not in given]
    problems += [f"{key} is not one of its tensors" for key in given if key not in expected]
    problems += [
        f"{key} is {given[key].dtype} {tuple(given[key].shape)}, not "
        f"{expected[key].dtype} {tuple(expected[key].shape)}"
        for key in expected if key in given and (given[key].shape != expected[key].shape
                                                 or given[key].dtype != expected[key].dtype)]
    if problems:
        raise FileFormatError(f"The weights of {name!r} in the file do not fit the network "
                              f"{type(module).__name__}: " + "; ".join(problems[:5]) + ".")
    module.load_state_dict(given)
    decode.used.update(prefix + key for key in given)


def _load_annotator(cls, document, decode, device):
    _require(document, "state")
    state = _checked(cls, decode(document["state"], "state"), "state", private=None)
    estimator = cls.__new__(cls)
    estimator.__setstate__(state)
    estimator.device = device
    return estimator

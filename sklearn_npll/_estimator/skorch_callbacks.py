"""How the estimators meet skorch's own callbacks.

- the splits that skorch's scoring callbacks read (``dataset_train``,
  ``dataset_valid``): samples with their candidate rows, in the order of the
  batches the predictions were cached from;
- callbacks that monitor a validation score, refused at ``fit`` when no
  hold-out is set;
- skorch's ``Checkpoint``, ``TrainEndCheckpoint`` and ``LoadInitState``: the
  file names of network A completed with the other networks, the method's
  state, the random generator states and the fitted attributes, so that a
  resume is exact, and the loading of such a checkpoint.
"""

import json
import os

import numpy as np
import torch
from skorch.callbacks import (BatchScoring, Checkpoint, EarlyStopping, EpochScoring,
                              LoadInitState, LRScheduler, TrainEndCheckpoint)
from skorch.dataset import Dataset as SkorchDataset
from skorch.history import History

# a private view class of the data layer: a split is a view on the fit's data
from .._data.inputs import _SubsetData
from ..callbacks.checkpoint import CheckpointError, TrainingCheckpoint
from .skorch_compat import registered_modules

__all__ = ["CandidateSplit", "check_callbacks", "checkpoint_companions",
           "load_checkpoint", "trained_split", "training_split", "validation_split"]


# ------------------------------------------------------------------ splits
class CandidateSplit(_SubsetData, SkorchDataset):
    """Some samples of a fit with their candidate rows, as skorch's scoring
    callbacks read a split.

    It is a view on the fit's data (an ``InputData``, which ``predict``
    accepts) and a skorch ``Dataset``: ``X`` is the split itself and ``y``
    its rows of the candidate matrix (float32), so that ``EpochScoring``
    hands a scorer the same samples, candidate rows and predictions with or
    without ``use_caching``.

    Parameters
    ----------
    data : InputData
        The samples the rows index.
    rows : array-like of int
        Positions in ``data``, repeated when a sample was trained twice.
    Y : torch.Tensor or ndarray of shape (len(data), n_classes)
        The candidate matrix of ``data``.
    """

    def __init__(self, data, rows, Y):
        super().__init__(data, rows)
        self._Y = Y

    @property
    def X(self):
        """The samples (this split)."""
        return self

    @property
    def y(self):
        """The candidate rows of the samples, float32."""
        rows = torch.as_tensor(self.indices)
        return torch.as_tensor(self._Y)[rows].float().cpu().numpy()


def training_split(ctx):
    """The training rows of a fit (all rows but the hold-out)."""
    rows = np.arange(len(ctx.data)) if ctx.train_rows is None else ctx.train_rows
    return CandidateSplit(ctx.data, rows, ctx.Y)


def trained_split(ctx):
    """The rows of the epoch's training steps, in the order they were trained
    (the order of the predictions skorch's scoring callbacks cached)."""
    rows = ctx.trainer.trained_rows
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    return CandidateSplit(ctx.data, rows, ctx.Y)


def validation_split(ctx):
    """The validation hold-out, or None."""
    if ctx.valid_data is None:
        return None
    return CandidateSplit(ctx.valid_data, np.arange(len(ctx.valid_data)), ctx.valid_Y)


# ----------------------------------------------------------- checks at fit
def _check_hold_out(net):
    """Refuse callbacks that need a validation split when none is held out."""
    if net.validation_fraction:
        return
    advice = ("Set validation_fraction (e.g. 0.2) to hold out a share of the training "
              "samples for validation")
    for name, cb in net.callbacks_:
        monitor = getattr(cb, "monitor", None)
        if isinstance(monitor, str) and monitor.startswith("valid_"):
            other = ("pass monitor=None to save every epoch" if isinstance(cb, Checkpoint)
                     else "monitor a training score such as 'train_loss'")
            raise ValueError(
                f"The callback {name!r} ({type(cb).__name__}) monitors {monitor!r}, a "
                f"score of the validation split, but {type(net).__name__} holds none out "
                f"(validation_fraction=None). {advice}, or {other}.")
        if isinstance(cb, (EpochScoring, BatchScoring)) and not cb.on_train:
            raise ValueError(
                f"The scoring callback {name!r} scores the validation split (on_train="
                f"False), but {type(net).__name__} holds none out (validation_fraction="
                f"None). {advice}, or pass on_train=True to score the training batches.")


def _check_early_stopping(net):
    """skorch's ``EarlyStopping(load_best=True)`` restores ``module_`` only."""
    predicting = len(net.inference_networks())
    for name, cb in net.callbacks_:
        if isinstance(cb, EarlyStopping) and cb.load_best and predicting > 1:
            raise ValueError(
                f"The callback {name!r} is EarlyStopping(load_best=True), which restores "
                f"module_ only, but {type(net).__name__} predicts with {predicting} "
                "networks: the others would stay at the last epoch. Pair EarlyStopping "
                "(load_best=False) with Checkpoint(monitor='valid_loss_best', "
                "load_best=True), which restores every network.")


def check_callbacks(net):
    """Refuse the callbacks that would fail or mislead later in this fit,
    and complete skorch's checkpoints (see :func:`complete_checkpoint`)."""
    _check_hold_out(net)
    _check_early_stopping(net)
    for cp in _plain_checkpoints(net):
        complete_checkpoint(net, cp)
    for name, cb in net.callbacks_:
        cp = _plain_checkpoint(cb.checkpoint) if isinstance(cb, LoadInitState) else None
        if cp is not None:
            complete_checkpoint(net, cp)
            _check_resumable(net, name, cp)


# ------------------------------------------------------ skorch checkpoints
#: The f_ arguments of skorch's Checkpoint that are not companions.
_SKORCH_FILES = {"f_params", "f_module", "f_optimizer", "f_criterion", "f_history",
                 "f_pickle"}


def _plain_checkpoint(cp):
    """The skorch ``Checkpoint`` that saves and loads for ``cp`` (the inner one
    of a ``TrainEndCheckpoint``); None for a ``TrainingCheckpoint``."""
    if isinstance(cp, TrainEndCheckpoint):
        if not hasattr(cp, "checkpoint_"):
            cp.initialize()
        return cp.checkpoint_
    if isinstance(cp, TrainingCheckpoint) or not isinstance(cp, Checkpoint):
        return None
    return cp


def _plain_checkpoints(net):
    for _, cb in net.callbacks_:
        cp = _plain_checkpoint(cb)
        if cp is not None:
            yield cp


def _template(net, cp):
    """The file name of network A (``f_params`` or ``f_module``), or None.

    Raises
    ------
    ValueError
        When it is a file object: the other files need names.
    """
    template = cp.f_params if cp.f_params is not None else getattr(cp, "f_module", None)
    if template is not None and not isinstance(template, str):
        raise ValueError(
            f"skorch's Checkpoint saves network A of {type(net).__name__} to a file object, "
            "which leaves no place for its other networks, its state and its random "
            "generator states. Give f_params a file name (the others are saved next to "
            "it), or use sklearn_npll.callbacks.TrainingCheckpoint.")
    return template


def checkpoint_companions(net):
    """The names saved next to network A by a skorch ``Checkpoint``: the other
    registered modules, the random generator states and the fitted attributes."""
    others = [name for name in registered_modules(net) if name != "module"]
    return others + ["random_state", "fitted"]


def companion_file(template, name):
    """The file of ``name`` next to network A's file ``template``: ``params``
    in its name replaced by ``name`` (else ``name_`` prefixed); ``.json`` for
    the fitted attributes.

    Examples
    --------
    >>> companion_file("params.pt", "module2")
    'module2.pt'
    >>> companion_file("params_{last_epoch[epoch]}.pt", "fitted")
    'fitted_{last_epoch[epoch]}.json'
    >>> companion_file("net.pt", "random_state")
    'random_state_net.pt'
    """
    folder, base = os.path.split(template)
    stem, suffix = os.path.splitext(base)
    stem = stem.replace("params", name, 1) if "params" in stem else f"{name}_{stem}"
    return os.path.join(folder, stem + (".json" if name == "fitted" else suffix))


def _add_companions(cp, template, names):
    for name in names:
        if not hasattr(cp, "f_" + name):  # a file the user named (or None) stays
            setattr(cp, "f_" + name, companion_file(template, name))


def complete_checkpoint(net, cp):
    """Give the skorch ``Checkpoint`` ``cp`` a file for each companion of
    ``net`` (:func:`checkpoint_companions`) that it does not name, next to
    network A's; drop the companions it was given for another estimator."""
    template = _template(net, cp)
    if template is None:
        return
    needed = checkpoint_companions(net)
    for key in [k for k in vars(cp) if k.startswith("f_") and k not in _SKORCH_FILES]:
        name = key[2:]
        if name not in needed and getattr(cp, key) == companion_file(template, name):
            delattr(cp, key)
    _add_companions(cp, template, needed)


def _check_resumable(net, name, cp):
    """A ``LoadInitState`` that restores the history must restore every
    network, state and generator and the optimizer too, or the resumed fit
    silently differs."""
    if cp.f_history is None:
        return
    names = ["params", "optimizer"] + [n for n in checkpoint_companions(net) if n != "fitted"]
    lacking = [f"f_{n}" for n in names if getattr(cp, f"f_{n}", None) is None
               and not (n == "params" and getattr(cp, "f_module", None) is not None)]
    if lacking:
        fresh = {"f_params": "fresh networks", "f_optimizer": "a fresh optimizer",
                 "f_random_state": "reseeded random generators"}
        raise ValueError(
            f"The callback {name!r} (LoadInitState) resumes from a Checkpoint that saves "
            f"the history but has {' and '.join(f + '=None' for f in lacking)}: the "
            "resumed fit would continue the epochs with "
            f"{' and '.join(fresh.get(f, f'a fresh {f[2:]}_') for f in lacking)}. Give "
            f"{' and '.join(lacking)} a file name, or use "
            "sklearn_npll.callbacks.TrainingCheckpoint.")


def _formatted_files(net, cp, history):
    """``{f_name: path}`` of everything ``cp`` saves, formatted (epoch
    placeholders, ``fn_prefix``, ``dirname``) on ``history``."""
    if history is None or len(history) == 0:
        # skorch formats on the last row even for names without placeholders
        history = History()
        history.new_epoch()
        history.new_batch()
        if getattr(cp, "event_name", None) is not None:
            history.record(cp.event_name, False)
    previous = net.history_
    net.history_ = history
    try:
        return cp.get_formatted_files(net)
    finally:
        net.history_ = previous


def _build_from_fitted(net, cp, history):
    """Build the networks of a fresh ``net`` from the fitted attributes ``cp``
    saved."""
    template = _template(net, cp)
    if template is None:
        raise ValueError(f"This Checkpoint saves no network (f_params=None); there is "
                         f"nothing to load into {type(net).__name__}.")
    _add_companions(cp, template, ["fitted"])
    fitted = _formatted_files(net, cp, history)["f_fitted"]
    if not os.path.exists(fitted):
        raise FileNotFoundError(
            f"{fitted!r} does not exist: no fitted attributes (classes, input shape) to "
            f"build {type(net).__name__}'s networks from. Load a checkpoint saved by a fit.")
    net.load_params(f_fitted=fitted)


def load_checkpoint(net, checkpoint, use_safetensors=False):
    """Load what a skorch ``Checkpoint`` (or ``TrainEndCheckpoint``) saved for
    ``net``: every network and state, the optimizer, the history and the
    random generator states; into a fresh estimator, the fitted attributes
    first.

    Raises
    ------
    FileNotFoundError
        When nothing is saved yet (``LoadInitState`` then starts afresh).
    CheckpointError
        When some files are missing, or the files are of different epochs or
        of another training set.
    """
    cp = _plain_checkpoint(checkpoint)
    history_file = cp.f_history_ if cp.f_history is not None else None
    history = (History.from_file(history_file)
               if history_file is not None and os.path.exists(history_file) else None)
    if not net.initialized_:
        _build_from_fitted(net, cp, history)
    complete_checkpoint(net, cp)
    files = _formatted_files(net, cp, history)
    for key in ("f_criterion", "f_pickle"):
        files.pop(key, None)
    files = {k: v for k, v in files.items() if v is not None}
    _check_files(net, cp, files)
    files.pop("f_history", None)
    _check_fitted(net, cp, files.pop("f_fitted", None))
    if history is not None:
        net.history = history
    try:
        net.load_params(use_safetensors=use_safetensors, **files)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"The checkpoint in {cp.dirname!r} does not fit {type(net).__name__} (saved by "
            f"another estimator, or with other parameters): "
            f"{str(exc).splitlines()[0].rstrip(':')}.") from exc
    if history is not None and "f_random_state" in files:
        _check_epochs(net, cp)
    for _, callback in net.callbacks_ if "f_optimizer" in files else []:
        # schedulers were built at on_train_begin, before this load
        if isinstance(callback, LRScheduler):
            callback.on_train_begin(net)


def _check_files(net, cp, files):
    """Every file must exist; none at all is a first run."""
    missing = sorted(os.path.basename(f) for f in files.values()
                     if isinstance(f, str) and not os.path.exists(f))
    if not missing:
        return
    if len(missing) == len(files):
        raise FileNotFoundError(f"No checkpoint in {cp.dirname!r} yet.")
    raise CheckpointError(
        f"Cannot resume {type(net).__name__} from the checkpoint in {cp.dirname!r}: "
        f"{', '.join(missing)} missing. It was saved by another estimator or an older "
        "version, or some of its files were removed; move it away to start afresh.")


def _check_fitted(net, cp, path):
    """The checkpoint must be of this training set: same classes and size."""
    if path is None:
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)  # as save_params(f_fitted=...) wrote it
    problems = []
    if saved.get("n_train_samples_") != net.n_train_samples_:
        problems.append(f"it was saved for {saved.get('n_train_samples_')} training samples; "
                        f"this fit has {net.n_train_samples_}")
    classes = saved.get("classes_", {}).get("array")
    if classes != net.classes_.tolist():
        problems.append(f"it was saved for the classes {classes}; this fit has "
                        f"{net.classes_.tolist()}")
    if problems:
        raise CheckpointError(f"Cannot resume {type(net).__name__} from the checkpoint in "
                              f"{cp.dirname!r}: " + "; ".join(problems) + ".")


def _check_epochs(net, cp):
    """The history and the random states must be of one epoch (skorch's
    Checkpoint writes its files one by one and ignores a failed write)."""
    states = getattr(net, "_random_states", None)
    if states is not None and states["epoch"] != len(net.history):
        raise CheckpointError(
            f"The checkpoint in {cp.dirname!r} is torn: its history holds "
            f"{len(net.history)} epochs but its random generator states are of epoch "
            f"{states['epoch']} (a save failed or was interrupted). Resume from an "
            "intact copy, or use sklearn_npll.callbacks.TrainingCheckpoint, which saves "
            "atomically.")

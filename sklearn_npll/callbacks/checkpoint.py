"""Checkpoints that resume a fit exactly: atomic saves, checked loads."""

import io
import json
import os
import re
import shutil
import uuid
import warnings

import numpy as np
import torch
from skorch.callbacks import Checkpoint, LRScheduler
from skorch.history import History
from skorch.utils import noop

from .._digest import digest
from .._estimator.skorch_compat import registered_modules, registered_optimizers


__all__ = ["CheckpointError", "TrainingCheckpoint"]

MANIFEST = "checkpoint.json"
_FORMAT = 1
_GENERATION = re.compile(r"^epoch-\d+-[0-9a-f]{8}$")
_TEMPORARY = re.compile(r"^\.epoch-\d+-[0-9a-f]{8}\.tmp$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed.

    It is missing, damaged, or written for another estimator or data set; the
    message names what is wrong.

    Examples
    --------
    >>> from sklearn_npll.callbacks import CheckpointError
    >>> issubclass(CheckpointError, ValueError)
    True
    """


def _json_default(value):
    """JSON for the numpy and torch values a history may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _to_json(value):
    return json.dumps(value, default=_json_default).encode()


def _torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _write_durably(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_folder(path):
    """Make renames inside ``path`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _manifest_problems(manifest, net):
    """What in ``manifest`` does not fit ``net``: format, estimator, modules,
    optimizers, number of training samples, classes."""
    estimator = type(net).__name__
    problems = []
    if manifest.get("format") != _FORMAT:
        problems.append(f"format {manifest.get('format')!r} is not {_FORMAT}")
    if manifest.get("estimator") != estimator:
        problems.append(f"it was saved by {manifest.get('estimator')}, not {estimator}")
    for kind, have in (("modules", registered_modules(net)),
                       ("optimizers", registered_optimizers(net))):
        if manifest.get(kind) != have:
            problems.append(f"it holds the {kind} {manifest.get(kind)} but {estimator} "
                            f"has {have}")
    if manifest.get("n_train_samples") != int(net.n_train_samples_):
        problems.append(f"it was saved for {manifest.get('n_train_samples')} training "
                        f"samples; this fit has {net.n_train_samples_}")
    if manifest.get("classes") != json.loads(_to_json(net.classes_)):
        problems.append(f"it was saved for the classes {manifest.get('classes')}; this "
                        f"fit has {net.classes_.tolist()}")
    return problems


class TrainingCheckpoint(Checkpoint):
    """A skorch ``Checkpoint`` that saves everything a resumed fit needs.

    It saves atomically, and refuses to resume from anything incomplete.

    Each save writes every registered module (``module_``, ``module2_``, the
    estimator's state such as Co-Reg's ``coreg_state_``), every optimizer,
    the random generator states of the fit and the history into a new
    folder ``epoch-<n>-<id>`` inside ``dirname``, then switches the manifest
    ``checkpoint.json`` (epoch, estimator, classes, sizes and SHA-256 of
    every file) to it with an atomic rename, and only then deletes the
    previous folder. A kill at any point leaves the last complete
    checkpoint in place.

    Pass the same callback to skorch's ``LoadInitState`` to resume: a
    ``dirname`` without a checkpoint starts a fresh fit; otherwise the fit
    continues from the saved epoch up to ``max_epochs`` with the saved
    random states, so it gives the model an uninterrupted fit gives. A
    checkpoint with a missing, damaged or inconsistent part raises
    :class:`CheckpointError` naming the problem.

    Parameters
    ----------
    dirname : str, default=""
        Folder of the checkpoint; ``""`` is the working directory.
    monitor : str, callable or None, default=None
        When to save, as in skorch's ``Checkpoint``; None saves every epoch.
    on_error : {"raise", "warn"}, default="raise"
        What a failed save (full disk, permissions) does: stop the fit with
        an ``OSError``, or warn with a ``RuntimeWarning`` and train on.
        Either way the last complete checkpoint is kept.
    event_name : str or None, default="event_cp"
        History column marking the epochs that saved.
    sink : callable, default=noop
        Where to print the save messages (e.g. ``print``), with ``verbose``.
    load_best : bool, default=False
        At the end of training, load the networks of the last save (with a
        ``monitor``, the best epoch).

    Examples
    --------
    >>> from skorch.callbacks import LoadInitState
    >>> from sklearn_npll import CoRegClassifier
    >>> cp = TrainingCheckpoint(dirname="coreg_run")
    >>> clf = CoRegClassifier(callbacks=[("checkpoint", cp),
    ...                                  ("resume", LoadInitState(cp))])
    """

    def __init__(self, dirname="", monitor=None, on_error="raise", event_name="event_cp",
                 sink=noop, load_best=False):
        super().__init__(monitor=monitor, f_params=None, f_optimizer=None, f_criterion=None,
                         f_history=None, dirname=dirname, event_name=event_name, sink=sink,
                         load_best=load_best)
        self.on_error = on_error

    def initialize(self):
        if self.on_error not in ("raise", "warn"):
            raise ValueError(f"on_error must be 'raise' or 'warn'; got {self.on_error!r}.")
        return super().initialize()

    # ------------------------------------------------------------------ save
    def _payload(self, net):
        """Every file of a checkpoint, serialised in memory."""
        states = getattr(net, "_random_states", None)
        epoch = len(net.history)
        if states is None or states["epoch"] != epoch:
            raise RuntimeError(
                f"{type(net).__name__} has no random generator state for epoch {epoch}; "
                "TrainingCheckpoint saves at the end of an epoch only.")
        files = {f"{name}.pt": _torch_bytes(getattr(net, name + "_").state_dict())
                 for name in [*registered_modules(net), *registered_optimizers(net)]}
        files["random_state.pt"] = _torch_bytes(states)
        files["history.json"] = _to_json(list(net.history))
        return files

    def save_model(self, net):
        """Write a new complete checkpoint, then switch the manifest to it."""
        epoch = len(net.history)
        files = self._payload(net)
        folder = f"epoch-{epoch:04d}-{uuid.uuid4().hex[:8]}"
        manifest = {
            "format": _FORMAT, "estimator": type(net).__name__, "epoch": epoch,
            "folder": folder, "modules": registered_modules(net),
            "optimizers": registered_optimizers(net),
            "n_train_samples": int(net.n_train_samples_),
            "classes": json.loads(_to_json(net.classes_)),
            "files": {name: {"bytes": len(data), "sha256": digest(data)}
                      for name, data in files.items()},
        }
        temporary = os.path.join(self.dirname, f".{folder}.tmp")
        try:
            os.makedirs(self.dirname or ".", exist_ok=True)
            os.makedirs(temporary)
            for name, data in files.items():
                _write_durably(os.path.join(temporary, name), data)
            os.rename(temporary, os.path.join(self.dirname, folder))
            _write_durably(os.path.join(self.dirname, MANIFEST + ".tmp"), _to_json(manifest))
            os.replace(os.path.join(self.dirname, MANIFEST + ".tmp"),
                       os.path.join(self.dirname, MANIFEST))
            _sync_folder(self.dirname or ".")
        except OSError as exc:
            shutil.rmtree(temporary, ignore_errors=True)
            message = (f"Could not save the checkpoint of epoch {epoch} in "
                       f"{self.dirname!r}: {exc}. The last complete checkpoint is kept.")
            if self.on_error == "raise":
                raise OSError(exc.errno, message) from exc
            warnings.warn(message, RuntimeWarning)
            self._sink(message, verbose=True)
            return
        self._remove_stale(keep=folder)

    def _remove_stale(self, keep):
        """Delete earlier checkpoint folders and leftovers of killed saves
        (only names this callback writes)."""
        for name in os.listdir(self.dirname or "."):
            if name != keep and (_GENERATION.match(name) or _TEMPORARY.match(name)):
                shutil.rmtree(os.path.join(self.dirname, name), ignore_errors=True)

    # ------------------------------------------------------------------ load
    def read(self, net):
        """Read and check the checkpoint for ``net``.

        Parameters
        ----------
        net : PartialLabelNet
            The estimator the checkpoint must match.

        Returns
        -------
        contents : dict or None
            ``{"epoch", "states" (file name -> loaded object), "history"}``;
            None when ``dirname`` holds no checkpoint at all.

        Raises
        ------
        CheckpointError
            Naming every missing, damaged or inconsistent part.
        """
        where = repr(self.dirname)
        found = self._read_manifest()
        if found is None:
            return None
        manifest, epoch, folder, listed = found
        problems = _manifest_problems(manifest, net)
        data = self._read_files(net, folder, listed, problems)
        if problems:
            raise CheckpointError(
                f"Cannot resume from the checkpoint of epoch {epoch} in {where}: "
                + "; ".join(problems) + ".")
        try:
            history = json.loads(data.pop("history.json"))
            states = {name: torch.load(io.BytesIO(raw), map_location=net.device_,
                                       weights_only=True) for name, raw in data.items()}
        except Exception as exc:
            raise CheckpointError(
                f"The checkpoint of epoch {epoch} in {where} cannot be read: {exc}") from exc
        if len(history) != epoch or states["random_state.pt"]["epoch"] != epoch:
            raise CheckpointError(
                f"The checkpoint in {where} is inconsistent: the manifest says epoch "
                f"{epoch}, the history holds {len(history)} epochs and the random state "
                f"is of epoch {states['random_state.pt']['epoch']}.")
        return {"epoch": epoch, "states": states, "history": history}

    def _read_manifest(self):
        """``(manifest, epoch, folder, files listed)``, or None when ``dirname``
        holds no checkpoint at all."""
        where = repr(self.dirname)
        manifest_path = os.path.join(self.dirname, MANIFEST)
        folder = self.dirname or "."
        names = os.listdir(folder) if os.path.isdir(folder) else []
        if not os.path.exists(manifest_path):
            leftovers = sorted(n for n in names if _GENERATION.match(n)
                               or n == "history.json" or n.endswith(".pt"))
            if not leftovers:
                return None
            raise CheckpointError(
                f"The checkpoint in {where} has no {MANIFEST} (the manifest naming the "
                f"last complete save) but holds {leftovers[:6]}: it was damaged or written "
                "by an older version. Move these files away to start afresh.")
        try:
            with open(manifest_path, "rb") as f:
                manifest = json.loads(f.read())
            return manifest, manifest["epoch"], manifest["folder"], manifest["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{MANIFEST} in {where} is damaged ({exc!r}).") from exc

    def _read_files(self, net, folder, listed, problems):
        """The bytes of every file ``net`` needs from ``folder``, by name; what is
        unlisted, missing or does not match the manifest goes to ``problems``."""
        names = [*registered_modules(net), *registered_optimizers(net)]
        expected = [f"{name}.pt" for name in names] + ["random_state.pt", "history.json"]
        data = {}
        for name in expected:
            path = os.path.join(self.dirname, folder, name)
            if name not in listed:
                problems.append(f"{MANIFEST} does not list {name}")
            elif not os.path.exists(path):
                problems.append(f"{os.path.join(folder, name)} is missing")
            else:
                with open(path, "rb") as f:
                    data[name] = f.read()
                if (len(data[name]) != listed[name]["bytes"]
                        or digest(data[name]) != listed[name]["sha256"]):
                    problems.append(f"{os.path.join(folder, name)} does not match "
                                    f"{MANIFEST} (damaged, or from another save)")
        return data

    def restore(self, net, modules_only=False):
        """Load the checkpoint into the initialised ``net``.

        This is what skorch's ``LoadInitState`` calls, through
        ``net.load_params``.

        Parameters
        ----------
        net : PartialLabelNet
            The initialised estimator to load into.
        modules_only : bool, default=False
            Load only the networks and states, not the optimizers, history
            and random states.

        Returns
        -------
        loaded : bool
            False when ``dirname`` holds no checkpoint yet.
        """
        contents = self.read(net)
        if contents is None:
            return False
        states = contents["states"]
        names = registered_modules(net) + ([] if modules_only else registered_optimizers(net))
        for name in names:
            try:
                getattr(net, name + "_").load_state_dict(states[f"{name}.pt"])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise CheckpointError(
                    f"{name}.pt of the checkpoint in {self.dirname!r} does not fit "
                    f"{type(net).__name__}.{name}_: {exc}") from exc
        if not modules_only:
            net.history = History(contents["history"])
            net._random_states = states["random_state.pt"]
            # learning-rate schedulers were built at on_train_begin, before this
            # load: build them again on the loaded history and optimizer
            for _, callback in getattr(net, "callbacks_", []):
                if isinstance(callback, LRScheduler):
                    callback.on_train_begin(net)
        self._sink(f"Resumed from the checkpoint of epoch {contents['epoch']} in "
                   f"{self.dirname!r}.", net.verbose)
        return True

    def on_train_end(self, net, **kwargs):
        if self.load_best and self.monitor is not None:
            self.restore(net, modules_only=True)

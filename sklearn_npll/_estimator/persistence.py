"""Saving, loading and pickling the estimators.

- ``save_params`` / ``load_params``: skorch's, plus a JSON file of the fitted
  attributes the networks are built from, so that parameters load into a
  fresh estimator;
- pickles hold, by default, only what ``predict`` uses
  (``keep_training_state=False``); ``copy.deepcopy`` keeps everything;
- the states of a fit's random generators, saved with checkpoints.
"""

import copy
import json
import os

import numpy as np
import torch
from sklearn.base import clone
from skorch import NeuralNet
from skorch.exceptions import NotInitializedError
from sklearn.exceptions import NotFittedError

from .._runtime import resolve_device
from .skorch_callbacks import load_checkpoint
from .skorch_compat import registered_modules, registered_optimizers

__all__ = ["PersistenceMixin", "fitted_from_json", "fitted_to_json", "load_random_states",
           "random_state_dict", "save_random_states", "set_random_states"]


def random_state_dict(generator, rng, epoch):
    """The states of a fit's torch generator and numpy ``RandomState`` after
    ``epoch`` finished epochs, as tensors and numbers (loadable with
    ``torch.load(weights_only=True)``)."""
    _, keys, pos, has_gauss, cached = rng.get_state()
    return {"epoch": int(epoch), "torch": generator.get_state(),
            "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
            "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss),
            "numpy_cached_gaussian": float(cached)}


def set_random_states(generator, rng, state):
    """Restore what :func:`random_state_dict` returned."""
    generator.set_state(state["torch"])
    rng.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),
                   state["numpy_pos"], state["numpy_has_gauss"],
                   state["numpy_cached_gaussian"]))


def save_random_states(net, f, use_safetensors=False):
    """Write ``net``'s generator states after its last finished epoch to
    ``f`` (tensors only, so that safetensors can hold them too)."""
    states = getattr(net, "_random_states", None)
    if states is None or states["epoch"] != len(net.history):
        raise ValueError(
            f"{type(net).__name__} has no random generator state for its last epoch: "
            "they are saved at the end of an epoch of fit or partial_fit.")
    scalars = [states["epoch"], states["numpy_pos"], states["numpy_has_gauss"],
               states["numpy_cached_gaussian"]]
    tensors = {"torch": states["torch"], "numpy_keys": states["numpy_keys"],
               "scalars": torch.tensor(scalars, dtype=torch.float64)}
    if use_safetensors:
        from safetensors.torch import save, save_file

        if isinstance(f, (str, os.PathLike)):
            save_file(tensors, f)
        else:
            f.write(save(tensors))
    else:
        torch.save(tensors, f)


def load_random_states(f, use_safetensors=False):
    """Read what :func:`save_random_states` wrote, as :func:`random_state_dict`
    returns it."""
    if use_safetensors:
        from safetensors.torch import load, load_file

        tensors = load_file(f) if isinstance(f, (str, os.PathLike)) else load(f.read())
    else:
        tensors = torch.load(f, map_location="cpu", weights_only=True)
    epoch, pos, has_gauss, cached = tensors["scalars"].tolist()
    return {"epoch": int(epoch), "torch": tensors["torch"],
            "numpy_keys": tensors["numpy_keys"], "numpy_pos": int(pos),
            "numpy_has_gauss": int(has_gauss), "numpy_cached_gaussian": float(cached)}


def fitted_to_json(value):
    """A fitted attribute as JSON (arrays keep their dtype, tuples stay tuples)."""
    if isinstance(value, torch.Tensor):
        value = value.cpu().numpy()
    if isinstance(value, np.ndarray):
        dtype = "object" if value.dtype == object else value.dtype.str
        return {"array": value.tolist(), "dtype": dtype}
    if isinstance(value, tuple):
        return {"tuple": [fitted_to_json(v) for v in value]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def fitted_from_json(value):
    if isinstance(value, dict) and "array" in value:
        return np.array(value["array"], dtype=value["dtype"])
    if isinstance(value, dict) and "tuple" in value:
        return tuple(fitted_from_json(v) for v in value["tuple"])
    return value


def _unfitted(item):
    """A user callback (or ``(name, callback)``) without its fit state."""
    if isinstance(item, tuple):
        return (item[0], _unfitted(item[1]))
    try:
        return clone(item)
    except Exception:  # not a scikit-learn-style object: keep it as given
        return item




class PersistenceMixin:
    """Mixin of :class:`~sklearn_npll._estimator.base.PartialLabelNet`:
    skorch's save and load with the fitted attributes, small pickles."""

    # what the networks are built from and predict needs, besides weights
    _fitted_meta = ("classes_", "sample_shape_", "image_size_", "input_mean_", "input_std_",
                    "n_train_samples_", "n_features_in_", "feature_names_in_", "_seed_",
                    "n_threads_")

    def save_params(self, f_params=None, f_optimizer=None, f_criterion=None, f_history=None,
                    use_safetensors=False, f_fitted=None, f_random_state=None, **kwargs):
        """Save as skorch's ``save_params``, plus fitted attributes and random states.

        The fitted attributes are those the networks are built from, so that
        :meth:`load_params` can restore into a fresh estimator. skorch's
        ``Checkpoint`` calls this method once per file; with these estimators
        it saves every network, state and generator (see the user guide).

        Parameters
        ----------
        f_params : str, path-like or file, default=None
            File for ``module_`` (network A); save the other modules with
            ``f_module2``, ``f_coreg_state``, ... in ``**kwargs``.
        f_optimizer : str, path-like or file, default=None
            File for ``optimizer_``, as in skorch.
        f_criterion : str, path-like or file, default=None
            Ignored: these estimators have no criterion module (skorch's
            ``Checkpoint`` names one by default).
        f_history : str, path-like or file, default=None
            JSON file for the history, as in skorch.
        use_safetensors : bool, default=False
            Save with safetensors instead of pickle, as in skorch.
        f_fitted : str or path-like, default=None
            A JSON file for the classes, input shape, normalisation and
            number of training samples.
        f_random_state : str, path-like or file, default=None
            File for the states of the fit's random generators after the
            last finished epoch (an exact resume continues from them).
        **kwargs
            ``f_<module or optimizer name>`` for the other components.

        Returns
        -------
        None
            The files are written.
        """
        if f_fitted is not None:
            meta = {name: fitted_to_json(getattr(self, name)) for name in self._fitted_meta
                    if hasattr(self, name)}
            with open(f_fitted, "w", encoding="utf-8") as f:
                json.dump(meta, f)
        if f_random_state is not None:
            save_random_states(self, f_random_state, use_safetensors)
        skorch_files = dict(f_params=f_params, f_optimizer=f_optimizer, f_history=f_history,
                            **kwargs)
        if any(f is not None for f in skorch_files.values()):
            super().save_params(use_safetensors=use_safetensors, **skorch_files)

    def load_params(self, f_params=None, f_optimizer=None, f_criterion=None, f_history=None,
                    checkpoint=None, use_safetensors=False, f_fitted=None, f_random_state=None,
                    **kwargs):
        """Load parameters as skorch's ``load_params``, on the resolved device.

        ``device="auto"`` is not a torch device: the tensors go to the device
        this estimator resolved.

        Parameters
        ----------
        f_params : str, path-like or file, default=None
            File of ``module_`` (network A); load the other modules with
            ``f_module2``, ``f_coreg_state``, ... in ``**kwargs``.
        f_optimizer : str, path-like or file, default=None
            File of ``optimizer_``, as in skorch.
        f_criterion : str, path-like or file, default=None
            Ignored: these estimators have no criterion module.
        f_history : str, path-like or file, default=None
            JSON file of the history, as in skorch.
        checkpoint : skorch Checkpoint or TrainEndCheckpoint, default=None
            Load everything it saved: every network and state, the
            optimizer, the history and the random generator states (into a
            fresh estimator, the fitted attributes first), or raise
            :class:`~sklearn_npll.callbacks.CheckpointError` naming what is
            missing or inconsistent. A ``TrainingCheckpoint`` loads its
            latest complete save.
        use_safetensors : bool, default=False
            Load safetensors files, as in skorch.
        f_fitted : str or path-like, default=None
            The file written by ``save_params(f_fitted=...)``. Needed to load
            into a fresh estimator: its networks and optimizer are then built
            from it before the weights are loaded. Load every network
            (``f_params``, ``f_module2``, ...) that predicts.
        f_random_state : str, path-like or file, default=None
            The file written by ``save_params(f_random_state=...)``: the next
            fit continues from these generator states when the history
            holds as many epochs as they were saved after.
        **kwargs
            ``f_<module or optimizer name>`` for the other components.

        Returns
        -------
        None
            The parameters are loaded in place.

        Examples
        --------
        >>> clf.save_params(f_params="a.pt", f_module2="b.pt", f_fitted="fitted.json")
        ... # doctest: +SKIP
        >>> fresh = CoRegClassifier()                               # doctest: +SKIP
        >>> fresh.load_params(f_params="a.pt", f_module2="b.pt",
        ...                   f_fitted="fitted.json")             # doctest: +SKIP

        What skorch's ``TrainEndCheckpoint`` (or ``Checkpoint``) saved:

        >>> from skorch.callbacks import TrainEndCheckpoint          # doctest: +SKIP
        >>> fresh = CoRegClassifier()                               # doctest: +SKIP
        >>> fresh.load_params(checkpoint=TrainEndCheckpoint(dirname="exp1"))
        ... # doctest: +SKIP
        """
        if hasattr(checkpoint, "restore"):
            # a TrainingCheckpoint loads everything it saved, or raises
            checkpoint.restore(self)
            return
        if checkpoint is not None:
            load_checkpoint(self, checkpoint, use_safetensors)
            return
        if f_fitted is not None:
            with open(f_fitted, encoding="utf-8") as f:
                meta = json.load(f)
            for name in ("n_features_in_", "feature_names_in_"):
                if name not in meta and hasattr(self, name):
                    delattr(self, name)
            for name, value in meta.items():
                setattr(self, name, fitted_from_json(value))
            self.n_classes_ = len(self.classes_)
            self.device_ = str(resolve_device(self.device))
            self.initialize()
        elif not self.initialized_:
            raise NotInitializedError(
                f"This {type(self).__name__} is not fitted: pass f_fitted=, the file "
                "written by save_params(f_fitted=...), which holds the classes, input "
                "shape and normalisation its networks are built from.")
        if f_random_state is not None:
            self._random_states = load_random_states(f_random_state, use_safetensors)
        skorch_files = dict(f_params=f_params, f_optimizer=f_optimizer, f_history=f_history,
                            **kwargs)
        if any(f is not None for f in skorch_files.values()):
            with self._on_resolved_device():
                super().load_params(use_safetensors=use_safetensors, **skorch_files)

    # --------------------------------------------- small models for serving
    def _prediction_state(self):
        """A copy of ``__dict__`` holding what ``predict`` needs: each
        inference network's prediction path (``for_prediction``), no
        optimizer, no other module (Co-Reg's prototypes and loss histories,
        PRODEN's label weights), callbacks reset."""
        state = dict(self.__dict__)
        inference = {id(net) for net in self.inference_networks()}
        for name in registered_modules(self):
            module = state.get(name + "_")
            keep = module is not None and id(module) in inference
            state[name + "_"] = module.for_prediction() if keep else None
        for name in registered_optimizers(self):
            state[name + "_"] = None
        state["callbacks_"] = []
        if isinstance(self.callbacks, list):
            # the user's callback objects hold fit state (e.g. a scheduler
            # bound to the optimizer); keep their parameters only
            state["callbacks"] = [_unfitted(item) for item in self.callbacks]
        state.pop("_random_states", None)
        state["_training_state_dropped"] = True
        return state

    def _drops_training_state(self):
        return (not self.keep_training_state and self.initialized_
                and hasattr(self, "classes_"))

    def __getstate__(self):
        if not self._drops_training_state():
            return super().__getstate__()
        shell = object.__new__(type(self))
        vars(shell).update(self._prediction_state())
        return NeuralNet.__getstate__(shell)

    def __deepcopy__(self, memo):
        # a deep copy keeps everything, training state included
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(NeuralNet.__getstate__(self), memo))
        return copied

    def trim_for_prediction(self):
        """Drop the training-only state in place, as pickling does by default.

        See ``keep_training_state``: the estimator still predicts but cannot
        continue training. This is skorch's method of the same name.

        Returns
        -------
        self : object
            The estimator, trimmed.
        """
        self.check_is_fitted()
        vars(self).update(self._prediction_state())
        return self

    def _check_can_continue(self):
        if getattr(self, "_training_state_dropped", False):
            raise NotFittedError(
                f"This {type(self).__name__} was pickled (or trimmed) without its "
                "training state (keep_training_state=False): it predicts but cannot "
                "continue training. Set keep_training_state=True before pickling to "
                "resume later, or fit with warm_start=False to train from scratch.")

    def __setstate__(self, state):
        requested = state.get("device")
        state["device"] = state.get("device_", "cpu")
        super().__setstate__(state)
        self.device_ = str(self.device)
        self.device = requested


"""Machinery shared by the partial-label estimators: a scikit-learn classifier
on top of skorch's ``NeuralNet`` (callbacks, history, checkpoints), with input
adapters, candidate-set validation, backbones, batched augmentation and
prediction. Subclasses write only their training epoch."""

import contextlib
import copy
import inspect
import json
import os
import warnings
import zlib
from numbers import Integral, Real
from dataclasses import dataclass, field

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import (EpochTimer, LRScheduler, PassthroughScoring, PrintLog,
                              ProgressBar)
from skorch.callbacks.scoring import ScoringBase
from skorch.exceptions import NotInitializedError
from skorch.utils import TeeGenerator
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state
from sklearn.exceptions import NotFittedError
from sklearn.utils import assert_all_finite, column_or_1d
# scikit-learn private: its parameter validation, used as its own estimators do
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data
from torch import nn

from . import _distributed
from ._augment import Normalize, PerSample, channel_stats, make_augmenters
from ._backbones import default_encoder
from ._callbacks import CosineLR
from ._candidates import check_candidates
from ._image_store import check_image_size, load_images
from ._inputs import AnnotatedImages, InputData, TensorData, _is_pil_image, as_input_data
from ._reproducibility import with_fixed_threads
from .metrics import covering_rate

__all__ = ["PartialLabelNet"]


def _resolve_device(device):
    if device is None or (isinstance(device, str) and device == "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


# "auto" keeps the training images on the GPU when they take at most this
# share of its free memory; otherwise batches travel through pinned memory.
DEVICE_STORE_SHARE = 0.5

_AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _resolve_precision(precision, device_type):
    """"auto": bf16 on CUDA where supported, else fp16; fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device_type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _store_fits_on_device(nbytes, device, share=DEVICE_STORE_SHARE):
    """Whether ``nbytes`` fit in ``share`` of the free memory of a CUDA device."""
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


def _use_channels_last(module, device_type):
    """channels_last pays on CUDA, for networks with 2-D convolutions."""
    return device_type == "cuda" and any(isinstance(m, nn.Conv2d) for m in module.modules())


def _batch_to_device(data, indices, device):
    """Rows of ``data`` on ``device``; to CUDA through pinned memory with a
    non-blocking copy (a gather straight into pinned memory for a store)."""
    if device.type != "cuda":
        return data.get_batch(indices)
    if isinstance(data, TensorData):
        idx = torch.as_tensor(np.asarray(indices).reshape(-1), dtype=torch.long)
        out = torch.empty((len(idx), *data.data.shape[1:]), dtype=data.data.dtype,
                          pin_memory=True)
        batch = torch.index_select(data.data, 0, idx, out=out)
    else:
        batch = data.get_batch(indices).pin_memory()
    return batch.to(device, non_blocking=True)


class _AutocastHooks:
    """Forward pre-hook and hook that run a module under ``torch.autocast``
    and hand back its output in float32."""

    def __init__(self, device_type, dtype):
        self.device_type, self.dtype, self.active = device_type, dtype, []

    def enter(self, module, args):
        amp = torch.autocast(self.device_type, dtype=self.dtype)
        amp.__enter__()
        self.active.append(amp)

    def exit(self, module, args, output):
        self.active.pop().__exit__(None, None, None)
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            return output.float()
        return output


def _is_array_like_matrix(X):
    """True for inputs that scikit-learn's validation should see: numeric
    array-likes that are not images, paths, PIL images or torch objects."""
    if isinstance(X, (torch.Tensor, torch.utils.data.Dataset, InputData, AnnotatedImages)):
        return False
    if hasattr(X, "tocsr") or hasattr(X, "iloc") or isinstance(X, np.ndarray):
        return np.ndim(X) == 2 if not hasattr(X, "tocsr") else True
    if isinstance(X, (list, tuple)) and len(X) and isinstance(X[0], (list, tuple, np.ndarray)):
        return np.ndim(X[0]) == 1
    return False


def _has_complex(X):
    """True for array-likes of complex numbers (which scikit-learn's
    validation reports by printing the whole array)."""
    if hasattr(X, "dtypes"):  # DataFrame
        return any(getattr(d, "kind", "") == "c" for d in X.dtypes)
    dtype = getattr(X, "dtype", None)
    return (np.asarray(X).dtype if dtype is None else np.dtype(dtype)).kind == "c"


def _is_list_of_sets(y):
    return isinstance(y, (list, tuple)) and len(y) > 0 \
        and isinstance(y[0], (set, frozenset, list, tuple))


def _check_targets(y):
    """scikit-learn's checks of numeric targets (finite values, a column
    vector read as labels, no continuous labels) and the cases it lets
    through silently.

    Returns
    -------
    y : ndarray or list of sets
    columns : ndarray or None
        The column names of a DataFrame candidate matrix (its classes).
    """
    if _is_list_of_sets(y):
        return y, None
    columns = None
    if hasattr(y, "columns") and getattr(y, "ndim", 1) == 2 and y.shape[1] > 1:
        columns = np.asarray(y.columns)
    if hasattr(y, "toarray"):  # scipy sparse candidate matrix
        y = y.toarray()
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if y.dtype.kind in "fc":
        assert_all_finite(y, input_name="y")
    if y.ndim == 2 and y.shape[1] == 1:
        if y.dtype.kind in "biuf" and len(y) and np.isin(y, (0, 1)).all():
            raise ValueError(
                "y has a single column of 0/1 values. As a candidate matrix it holds one "
                f"class, and its {int((y == 0).sum())} row(s) of 0 have no candidate; a "
                "classifier needs at least 2 classes (one column each). If these are "
                "binary labels, pass them as a 1-D array: y.ravel().")
        y = column_or_1d(y, warn=True)
    if y.ndim == 1:
        check_classification_targets(y)
        if y.dtype.kind in "iu" and (y == -1).any() and (y == 0).any():
            warnings.warn(
                f"y holds the label -1 in {int((y == -1).sum())} row(s), next to label 0. "
                "It is read as a class named -1, not as 'unlabeled' (scikit-learn's "
                "semi-supervised convention). Give an unlabeled sample every class as "
                "candidates instead (a row of ones in a candidate matrix).", UserWarning)
    return y, columns


def _check_class_coverage(Y, classes):
    """A classifier needs two classes; a class in no candidate set cannot be
    learnt (warned, not refused: an annotator may find no image of it)."""
    used = np.flatnonzero(Y.sum(axis=0) > 0)
    if len(used) < 2:
        raise ValueError(
            f"y holds a single class ({np.asarray(classes)[used[:1]].tolist()[0]!r}) among "
            "its candidate sets; a classifier needs at least 2 classes.")
    unused = np.flatnonzero(Y.sum(axis=0) == 0)
    if unused.size:
        warnings.warn(
            f"{unused.size} class(es) appear in no candidate set: "
            f"{[c.item() if isinstance(c, np.generic) else c for c in classes[unused][:5]]}. "
            "They cannot be learnt and are never predicted; drop their columns or add "
            "samples that hold them.", UserWarning)


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


def _to_json(value):
    """A fitted attribute as JSON (arrays keep their dtype, tuples stay tuples)."""
    if isinstance(value, torch.Tensor):
        value = value.cpu().numpy()
    if isinstance(value, np.ndarray):
        dtype = "object" if value.dtype == object else value.dtype.str
        return {"array": value.tolist(), "dtype": dtype}
    if isinstance(value, tuple):
        return {"tuple": [_to_json(v) for v in value]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value):
    if isinstance(value, dict) and "array" in value:
        return np.array(value["array"], dtype=value["dtype"])
    if isinstance(value, dict) and "tuple" in value:
        return tuple(_from_json(v) for v in value["tuple"])
    return value


def _unfitted(item):
    """A user callback (or ``(name, callback)``) without its fit state."""
    if isinstance(item, tuple):
        return (item[0], _unfitted(item[1]))
    try:
        return clone(item)
    except Exception:  # not a scikit-learn-style object: keep it as given
        return item


def reset_parameters(module):
    """Re-draw every parameter of ``module`` that knows how to."""
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return module


@dataclass
class FitContext:
    """What one call of ``fit`` works with; never stored on the estimator
    (it holds the training data and unpicklable generators)."""

    data: InputData
    Y: torch.Tensor                # (n, C) float candidate matrix on the device
    device: torch.device
    generator: torch.Generator    # CPU generator for every torch draw
    rng: np.random.RandomState     # numpy draws (orders, mixtures)
    augmenters: dict
    valid_data: InputData = None
    valid_Y: np.ndarray = None
    extra: dict = field(default_factory=dict)
    channels_last: bool = False
    _device_images: torch.Tensor = None

    def batch(self, indices):
        """Inputs of the given training rows, on the device."""
        if self._device_images is not None:
            x = self._device_images[torch.as_tensor(indices, device=self.device)]
        else:
            x = _batch_to_device(self.data, np.asarray(indices), self.device)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def augment(self, kind, x):
        return self.augmenters[kind](x, self.generator)


class PartialLabelNet(ClassifierMixin, NeuralNet):
    """Base of the partial-label estimators (not public).

    Subclasses define their constructor (every parameter explicit), the
    networks (:meth:`build_networks`), the networks used at inference
    (:meth:`inference_networks`) and one training epoch (:meth:`run_epoch`).
    """

    # skorch internals that these estimators do not expose as parameters:
    # data loading, criterion and compilation are handled here.
    prefixes_ = ["callbacks"]
    compile = False
    use_caching = "auto"
    criterion = None
    torch_load_kwargs = None
    # per-term losses stay in the history but out of the per-epoch line
    _log_keys_ignored = ()

    _parameter_constraints = {
        "module": [None, callable, nn.Module],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 2, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "optimizer": [callable],
        "cosine_epochs": [None, Interval(Integral, 1, None, closed="left")],
        "flip": ["boolean"],
        "padding": [None, Interval(Integral, 0, None, closed="left")],
        "weak_augment": [None, callable],
        "strong_augment": [None, callable],
        "validation_fraction": [None, Interval(Real, 0, 1, closed="neither")],
        "callbacks": [None, list, StrOptions({"disable"})],
        "verbose": ["verbose"],
        "device": [str, torch.device, None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "keep_training_state": ["boolean"],
        "image_size": [None, StrOptions({"auto"}), Interval(Integral, 1, None, closed="left"),
                       tuple, list],
        "memory_budget": [None, Interval(Integral, 0, None, closed="left")],
        "num_workers": [None, Interval(Integral, -1, None, closed="left")],
        "precision": [StrOptions({"auto", "fp32", "bf16", "fp16"})],
        "device_store": ["boolean", StrOptions({"auto"})],
    }

    # ------------------------------------------------------------------ init
    def _finish_init(self, kwargs):
        """skorch's bookkeeping of ``NeuralNet.__init__`` for the ``**kwargs``
        (``module__*``, ``optimizer__*``, ``callbacks__*``) that it routes."""
        history = kwargs.pop("history", None)
        initialized = kwargs.pop("initialized_", False)
        virtual_params = kwargs.pop("virtual_params_", dict())
        kwargs.pop("_params_to_validate", None)
        # skorch private: the names its _validate_params checks against prefixes_
        self._params_to_validate = set(kwargs.keys())
        vars(self).update(kwargs)
        self.history_ = history
        self.initialized_ = initialized
        self.virtual_params_ = virtual_params

    def _get_param_names(self):
        return [k for k in self.__dict__
                if not k.endswith("_") and not k.startswith("_")]

    # scikit-learn's repr (changed parameters only), not skorch's
    __repr__ = BaseEstimator.__repr__

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags

    # --------------------------------------------------------- subclass API
    def build_networks(self, encoder_factory):
        """Return ``{attribute name without '_': nn.Module}``; the first
        entries named ``module``, ``module2``, ... get an optimizer each."""
        raise NotImplementedError

    def inference_networks(self):
        """The networks whose mean logits make a prediction."""
        raise NotImplementedError

    def run_epoch(self, epoch, ctx):
        """Train one epoch; return ``{term name: mean value}``."""
        raise NotImplementedError

    # ------------------------------------------------------- skorch plumbing
    @property
    def _default_callbacks(self):
        callbacks = [("epoch_timer", EpochTimer())]
        if not self._user_schedules():
            callbacks.append(("lr_schedule", CosineLR()))
        callbacks += [
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("print_log", PrintLog(keys_ignored=list(self._log_keys_ignored))),
        ]
        if isinstance(self.verbose, Integral) and self.verbose > 1:
            callbacks.append(("progress_bar", ProgressBar()))
        return callbacks

    def _user_schedules(self):
        """skorch ``LRScheduler`` callbacks passed by the user: they replace
        the built-in cosine schedule rather than fight it."""
        callbacks = self.callbacks if isinstance(self.callbacks, list) else []
        found = []
        for item in callbacks:
            cb = item[1] if isinstance(item, tuple) else item
            if isinstance(cb, LRScheduler) or (isinstance(cb, type)
                                               and issubclass(cb, LRScheduler)):
                found.append(cb)
        return found

    def initialize(self):
        """Create callbacks, networks, optimizer and history (skorch's
        ``initialize``); needs the shapes that :meth:`fit` reads from the
        data, so it runs inside ``fit`` and ``partial_fit``."""
        if not hasattr(self, "sample_shape_"):
            raise NotFittedError(
                f"{type(self).__name__} sizes its networks from the training data: "
                "call fit or partial_fit instead of initialize.")
        _distributed.prepare_fit(self)
        with self._on_resolved_device():
            super().initialize()
        _distributed.after_initialize(self)
        self._check_scoring_callbacks()
        return self

    def _check_scoring_callbacks(self):
        for name, cb in self.callbacks_:
            if isinstance(cb, ScoringBase) and isinstance(cb.scoring, str):
                raise ValueError(
                    f"The scoring callback {name!r} scores with {cb.scoring!r}, which compares "
                    "predictions with 1-D labels, but the batches of "
                    f"{type(self).__name__} carry candidate sets (rows of the (n, C) "
                    "candidate matrix). Use scoring=None (the estimator's score: the "
                    "covering rate) or sklearn_npll.metrics.covering_rate_scorer, or a "
                    "callable (net, X, Y) of your own.")

    @contextlib.contextmanager
    def _on_resolved_device(self):
        """skorch moves modules and loaded tensors to ``self.device``; give it
        the device resolved at fit ("auto" is not a torch device)."""
        requested = self.device
        self.device = getattr(self, "device_", None) or _resolve_device(requested)
        try:
            yield
        finally:
            self.device = requested

    def initialize_criterion(self):
        """No criterion: each estimator computes its own losses."""
        return self

    def initialize_module(self):
        seeds = check_random_state(self._fit_seed("modules")).randint(2**31 - 1, size=16)
        sample_shape = self.sample_shape_
        counter = iter(seeds)

        def encoder_factory():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(next(counter)))
                return self._make_encoder(sample_shape)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seeds[-1]))
            networks = self.build_networks(encoder_factory)
        device_type = torch.device(self.device_).type
        for name, module in networks.items():
            module = module.to(self.device_)
            if _use_channels_last(module, device_type):
                module = module.to(memory_format=torch.channels_last)
            setattr(self, name + "_", module)
        return self

    def _make_encoder(self, sample_shape):
        kwargs = self.get_params_for("module")
        if self.module is None:
            cls, default_kwargs = default_encoder(sample_shape)
            return cls(**{**default_kwargs, **kwargs})
        if isinstance(self.module, nn.Module):
            return reset_parameters(copy.deepcopy(self.module))
        return self.module(**kwargs)

    def network_names(self):
        """Names of the trained networks (``module``, ``module2``, ...) among
        the modules skorch registered (``_modules``, a skorch private list)."""
        return [name for name in self._modules if name.startswith("module")]

    def set_params(self, **kwargs):
        """Set parameters as skorch does: on a fitted estimator,
        ``module__*`` re-initialises the networks (fresh weights, to be
        trained again) and the optimizer; ``callbacks__*`` rebuilds the
        callbacks.

        Parameters
        ----------
        **kwargs
            Parameter names and values.

        Returns
        -------
        self
        """
        device = kwargs.pop("device", self.device)
        if not self.initialized_ and "callbacks" in kwargs:
            # stored as given and validated at fit, as scikit-learn asks
            # (skorch would build the callbacks at once)
            self.callbacks = kwargs.pop("callbacks")
        with self._on_resolved_device():
            super().set_params(**kwargs)
        self.device = device
        return self

    def get_metadata_routing(self):
        """scikit-learn's metadata routing of this estimator: a consumer
        only (no internal splitter to route ``groups`` to, unlike skorch's
        ``train_split``); ``score`` accepts ``sample_weight``.

        Returns
        -------
        routing : MetadataRequest
        """
        return BaseEstimator.get_metadata_routing(self)

    # skorch methods of its own training loop, which these estimators replace
    # by their epochs (run_epoch, step_network) and inputs (InputData)
    def _not_used(self, name, use):
        raise NotImplementedError(
            f"{type(self).__name__}.{name} is skorch's per-batch training machinery, "
            f"which this estimator does not use: its epochs draw their own batches "
            f"(augmented views, network-specific splits). {use}")

    def get_iterator(self, dataset, training=False):
        """Not available: see :meth:`forward_iter` for batched inference."""
        self._not_used("get_iterator", "Use forward_iter for batched inference.")

    def get_dataset(self, X, y=None):
        """Not available: inputs are read as described in :meth:`fit`."""
        self._not_used("get_dataset", "Pass X (and y) to fit, predict or score.")

    def get_split_datasets(self, X, y=None, **fit_params):
        """Not available: use the ``validation_fraction`` parameter."""
        self._not_used("get_split_datasets", "Set validation_fraction for a hold-out.")

    def train_step(self, batch, **fit_params):
        """Not available: subclasses train in :meth:`run_epoch`."""
        self._not_used("train_step", "Training steps go through step_network.")

    def train_step_single(self, batch, **fit_params):
        """Not available: subclasses train in :meth:`run_epoch`."""
        self._not_used("train_step_single", "Training steps go through step_network.")

    def get_train_step_accumulator(self):
        """Not available: subclasses train in :meth:`run_epoch`."""
        self._not_used("get_train_step_accumulator", "Training steps go through step_network.")

    def validation_step(self, batch, **fit_params):
        """Not available: set ``validation_fraction``."""
        self._not_used("validation_step", "Set validation_fraction for a hold-out.")

    def evaluation_step(self, batch, training=False):
        """Not available: see :meth:`infer`."""
        self._not_used("evaluation_step", "Use infer for the logits of one batch.")

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """Not available: subclasses train in :meth:`run_epoch`."""
        self._not_used("run_single_epoch", "Call partial_fit to train one more epoch.")

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Not available: each estimator computes its own loss terms."""
        self._not_used("get_loss", "The loss terms of each epoch are in history_.")

    def check_data(self, X, y=None):
        """Not available: inputs are validated by :meth:`fit`."""
        self._not_used("check_data", "fit validates X and y.")

    def initialize_optimizer(self, triggered_directly=None):
        """One optimizer, ``optimizer_``, with one parameter group per network
        (``module_``, ``module2_``, ... in order).

        A step changes only the parameters that received a gradient, so each
        network trains on its own losses; a learning-rate schedule (the
        built-in :class:`~sklearn_npll.callbacks.CosineLR` or any skorch
        ``LRScheduler``) sets every group, hence every network, alike.
        """
        kwargs = {"lr": self.lr, **self.get_params_for("optimizer")}
        accepted = inspect.signature(self.optimizer).parameters
        for key in ("momentum", "weight_decay"):
            if key in accepted and key not in kwargs:
                kwargs[key] = getattr(self, key)
        groups = [{"params": [p for p in getattr(self, name + "_").parameters()
                              if p.requires_grad]}
                  for name in self.network_names()]
        self.optimizer_ = self.optimizer(groups, **kwargs)
        return self

    # ------------------------------------------------------------ validation
    def _fit_seed(self, purpose):
        """A seed for one purpose of this fit, derived from ``random_state``."""
        return (self._seed_ + zlib.crc32(purpose.encode())) % (2**31 - 1)

    def _check_X(self, X, reset):
        if isinstance(X, (list, tuple)) and len(X) == 0 or (
                isinstance(X, np.ndarray) and X.ndim == 1 and X.size == 0):
            raise ValueError("X is empty (0 samples); pass at least one sample.")
        first = X[0] if isinstance(X, (np.ndarray, list, tuple)) and len(X) else None
        # paths, PIL images and arrays of mixed sizes are not one numpy array:
        # np.ndim would fail on them
        if isinstance(X, (np.ndarray, list, tuple)) \
                and not isinstance(first, (str, os.PathLike, np.ndarray, torch.Tensor)) \
                and not _is_pil_image(first) and np.ndim(X) == 1:
            raise ValueError(
                f"Expected 2D array, got 1D array instead: array of shape {np.shape(X)}. "
                "Reshape your data either using array.reshape(-1, 1) if your data has a "
                "single feature or array.reshape(1, -1) if it contains a single sample.")
        if _is_array_like_matrix(X):
            if _has_complex(X):
                raise ValueError("X holds complex numbers; pass real-valued features.")
            X = validate_data(self, X, reset=reset, dtype=np.float32)
            data = as_input_data(X)
        else:
            data = self._load_images(X, reset)
            if data.kind == "features":
                if reset:
                    self.n_features_in_ = data.sample_shape[0]
                elif data.sample_shape[0] != self.n_features_in_:
                    raise ValueError(
                        f"X has {data.sample_shape[0]} features, but {type(self).__name__} "
                        f"is expecting {self.n_features_in_} features as input.")
        if not reset and tuple(data.sample_shape) != tuple(self.sample_shape_):
            raise ValueError(
                f"Samples of X have shape {tuple(data.sample_shape)}, but the model was "
                f"fitted on samples of shape {tuple(self.sample_shape_)}.")
        return data

    def _load_images(self, X, reset):
        """Read X, decoding files, PIL images and datasets once into a store at
        the training size (``image_size_``, resolved at fit, applied later)."""
        if reset:
            size, mode = self.image_size, None
        else:
            size = None if self.image_size is None else getattr(self, "image_size_", None)
            channels = self.sample_shape_[0] if len(self.sample_shape_) == 3 else None
            mode = {1: "L", 3: "RGB"}.get(channels)
        data, resolved = load_images(X, size, mode=mode, memory_budget=self.memory_budget,
                                     num_workers=self.num_workers,
                                     verbose=self.verbose if reset else 0)
        if reset:
            self.image_size_ = resolved
        return data

    def _check_training_data(self, X, y, reset=True):
        classes = None if reset else self.classes_
        if isinstance(X, AnnotatedImages):
            classes = X.classes if classes is None else classes
            if y is None:
                y = X.candidates
            X = X.images
        if isinstance(X, (list, tuple)) and len(X) == 0:
            raise ValueError("X is empty (0 samples); fit needs at least 2 samples.")
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None. "
                "Pass candidate sets (an (n, C) 0/1 matrix, 1-D labels or a list of sets "
                "of class names), or the output of VLMPartialAnnotator.transform as X.")
        y, columns = _check_targets(y)
        if classes is None and columns is not None:
            classes = columns
        if reset and classes is not None and np.ndim(y) == 1 and not _is_list_of_sets(y):
            # labels given next to an annotation: keep its class names when they fit
            classes = classes if np.isin(np.asarray(y), classes).all() else None
        if reset:
            for attr in ("n_features_in_", "feature_names_in_"):
                if hasattr(self, attr):
                    delattr(self, attr)
        data = self._check_X(X, reset=reset)
        if len(data) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 samples to train (batch norm and "
                f"the mixture split need more than one); got {len(data)} sample.")
        Y, classes = check_candidates(y, n_samples=len(data), classes=classes)
        if reset:
            _check_class_coverage(Y, classes)
        return data, Y, classes

    # ------------------------------------------------------------------- fit
    @with_fixed_threads
    def fit(self, X, y=None):
        """Fit both the networks from candidate sets.

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Training inputs; images of shape (n, H, W), (n, H, W, C) or
            (n, C, H, W), a feature matrix (n, d), or the annotator's output
            (which also carries the candidate sets and class names).
        y : array-like of shape (n, C) or (n,), list of sets, or None
            Candidate matrix (0/1), labels (singleton sets) or sets of class
            names; None when ``X`` carries the candidates.

        Returns
        -------
        self : object
            The fitted estimator.

        Notes
        -----
        With ``warm_start=True`` a fitted estimator is not re-initialised:
        training continues up to ``max_epochs`` epochs in total (counted over
        the history), on the learning-rate schedule where it stopped. Raise
        ``max_epochs`` to train longer: the cosine then falls on from the
        last learning rate to its minimum at the new ``max_epochs`` (see
        :class:`~sklearn_npll.callbacks.CosineLR`).
        """
        if not self.warm_start or not self.initialized_:
            self._start_fit(X, y)
        elif len(self.history) >= self.max_epochs:
            warnings.warn(
                f"warm_start: {type(self).__name__} has trained {len(self.history)} epochs, "
                f"max_epochs={self.max_epochs}; nothing to do. Raise max_epochs to train "
                "longer, or call partial_fit for one more epoch.", UserWarning)
        return self._train(X, y, epochs=None)

    @with_fixed_threads
    def partial_fit(self, X, y=None, classes=None):
        """Train one more epoch, as skorch's ``partial_fit`` with ``max_epochs=1``.

        The first call initialises, each call continues the learning-rate
        schedule from the history's length (epochs after ``max_epochs`` run
        at the schedule's final learning rate).

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Training inputs, as in :meth:`fit`; the same samples on every call.
        y : array-like of shape (n, C) or (n,), list of sets, or None
            Candidate sets, as in :meth:`fit`.
        classes : None
            Ignored; present for scikit-learn's API (classes come from ``y``).

        Returns
        -------
        self : object
            The estimator, trained one epoch further.
        """
        if not self.initialized_:
            self._start_fit(X, y)
        return self._train(X, y, epochs=1)

    def _start_fit(self, X, y):
        self._pending_fit = self._prepare_fit(X, y)
        self.initialize()
        self._training_state_dropped = False

    def _train(self, X, y, epochs):
        self._check_can_continue()
        self.notify("on_train_begin", X=X, y=y)
        self.fit_loop(X, y, epochs=epochs)
        self.notify("on_train_end", X=X, y=y)
        return self

    def _prepare_fit(self, X, y):
        validate_parameter_constraints(
            self._parameter_constraints, self.get_params(deep=False),
            caller_name=type(self).__name__)
        check_image_size(self.image_size)
        for attr in ("_diverged", "_random_states"):
            self.__dict__.pop(attr, None)
        data, Y, classes = self._check_training_data(X, y)
        self.classes_ = classes
        self.n_classes_ = len(classes)
        self.sample_shape_ = tuple(data.sample_shape)
        self.device_ = _resolve_device(self.device)
        self.precision_ = _resolve_precision(self.precision, torch.device(self.device_).type)
        self._seed_ = int(check_random_state(self.random_state).randint(2**31 - 1))
        self.n_train_samples_ = len(data)
        mean, std = channel_stats(self._stat_batches(data))
        self.input_mean_, self.input_std_ = mean, std
        return data, Y

    @staticmethod
    def _stat_batches(data, max_samples=20_000, batch_size=1024):
        """Batches for the normalisation statistics: every sample, or a
        fixed-seed random subset of large (e.g. lazily read) data."""
        rows = np.arange(len(data))
        if len(rows) > max_samples:
            rows = np.sort(np.random.RandomState(0).choice(rows, max_samples, replace=False))
        return (data.get_batch(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size))

    def _make_context(self, X, y):
        pending = self.__dict__.pop("_pending_fit", None)
        if pending is None:
            pending = self._check_training_data(X, y, reset=False)[:2]
        data, Y = pending
        if len(data) != self.n_train_samples_:
            raise ValueError(
                f"warm_start continues a fit on {self.n_train_samples_} samples; got "
                f"{len(data)}. Refit with warm_start=False to train on other data.")
        device = torch.device(self.device_)
        generator, rng = torch.Generator(), np.random.RandomState()
        snapshot = getattr(self, "_random_states", None)
        if snapshot is not None and snapshot["epoch"] == len(self.history):
            # continue the draws of the last finished epoch: a resumed fit
            # equals an uninterrupted one
            set_random_states(generator, rng, snapshot)
        else:
            generator.manual_seed(self._fit_seed(f"torch{len(self.history)}"))
            rng.seed(self._fit_seed(f"numpy{len(self.history)}"))
        _distributed.split_generator(self, generator)
        ctx = FitContext(data=data, Y=torch.as_tensor(Y, dtype=torch.float32, device=device),
                         device=device, generator=generator, rng=rng,
                         augmenters=self._augmenters())
        if self.validation_fraction:
            n_valid = int(round(self.validation_fraction * len(data)))
            if not 0 < n_valid < len(data):
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} leaves no sample for "
                    f"training or validation with {len(data)} samples.")
            order = np.random.RandomState(self._fit_seed("validation")).permutation(len(data))
            ctx.valid_data = data.subset(order[:n_valid])
            ctx.valid_Y = Y[order[:n_valid]]
            ctx.extra["train_rows"] = np.sort(order[n_valid:])
        if device.type == "cuda":
            if isinstance(data, TensorData) and self._store_on_device(data, device):
                ctx._device_images = data.data.to(device)
            ctx.channels_last = any(_use_channels_last(getattr(self, name + "_"), "cuda")
                                    for name in self.network_names())
        # fp16: loss scaling, for this fit's steps (see step_network)
        self._grad_scaler = (torch.amp.GradScaler(device.type)
                             if self._precision() == "fp16" else None)
        return ctx

    def _store_on_device(self, data, device):
        """Whether the training store goes to the GPU whole (``device_store``)."""
        if self.device_store == "auto":
            nbytes = data.data.element_size() * data.data.nelement()
            return _store_fits_on_device(nbytes, device)
        return bool(self.device_store)

    def _precision(self):
        # resolved on the current device: a model trained on CUDA with "auto"
        # and loaded on a CPU predicts in fp32
        return _resolve_precision(getattr(self, "precision", "fp32"),
                                  torch.device(self.device_).type)

    @contextlib.contextmanager
    def mixed_precision(self):
        """Within this context the networks' encoders (the backbones, where the
        cost is) run under ``torch.autocast`` per ``precision`` and return
        float32, so heads, losses and label bookkeeping stay in float32."""
        dtype = _AMP_DTYPES[self._precision()]
        if dtype is None:
            yield
            return
        hooks = _AutocastHooks(torch.device(self.device_).type, dtype)
        handles = []
        for name in self.network_names():
            for child_name, child in getattr(self, name + "_").named_children():
                if child_name.endswith("encoder"):
                    handles.append(child.register_forward_pre_hook(hooks.enter))
                    handles.append(child.register_forward_hook(hooks.exit, always_call=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _augmenters(self):
        augmenters = make_augmenters(self.sample_shape_, mean=self.input_mean_,
                                     std=self.input_std_, flip=self.flip,
                                     padding=self.padding)
        for kind, user in (("weak", self.weak_augment), ("strong", self.strong_augment)):
            if user is not None:
                augmenters[kind] = PerSample(user, mean=self.input_mean_, std=self.input_std_)
        return augmenters

    def training_rows(self, ctx):
        """Indices of the rows that train (all, less any validation hold-out)."""
        rows = ctx.extra.get("train_rows")
        return np.arange(len(ctx.data)) if rows is None else rows

    def fit_loop(self, X, y=None, epochs=None):
        ctx = self._make_context(X, y)
        start = len(self.history)
        stop = self.max_epochs if epochs is None else start + epochs
        finished, rows_before = True, len(self.history)
        try:
            for epoch in range(start, stop):
                finished, rows_before = False, len(self.history)
                self.notify("on_epoch_begin", dataset_train=ctx.data,
                            dataset_valid=ctx.valid_data)
                with self.mixed_precision():
                    terms = self.run_epoch(epoch, ctx)
                for name, value in terms.items():
                    self.history.record(name, value)
                if ctx.valid_data is not None:
                    self._validate(ctx)
                self._random_states = random_state_dict(ctx.generator, ctx.rng,
                                                        len(self.history))
                finished = True
                self.notify("on_epoch_end", dataset_train=ctx.data,
                            dataset_valid=ctx.valid_data)
        except KeyboardInterrupt:  # skorch's EarlyStopping, or the user
            if not finished:
                del self.history[rows_before:]
                warnings.warn(
                    f"Training was interrupted during epoch {rows_before + 1}; that epoch "
                    f"is not recorded (the history holds {rows_before} finished epochs), "
                    "but the networks keep its partial updates. For an exact "
                    "continuation, resume from a checkpoint.", RuntimeWarning)
        except FloatingPointError as exc:
            # NaN parameters must not predict: refuse until refitted
            self._diverged = str(exc)
            self.initialized_ = False
            raise
        self._grad_scaler = None
        self.after_fit(ctx)
        return self

    def after_fit(self, ctx):
        """Hook for fitted attributes derived at the end of training."""

    def _validate(self, ctx):
        """Predict the validation hold-out batch by batch, sending skorch's
        batch events (``training=False``, ``batch=(X, Y)``, ``y_pred`` the
        logits, ``loss`` the batch's ``valid_loss``), and record
        ``valid_loss``, ``valid_covering_rate`` and
        ``valid_covering_rate_best``."""
        data, Y = ctx.valid_data, ctx.valid_Y
        logits = []
        for start in range(0, len(data), self.batch_size):
            rows = np.arange(start, min(start + self.batch_size, len(data)))
            x = data.get_batch(rows).to(ctx.device)
            y = torch.as_tensor(Y[rows], dtype=torch.float32, device=ctx.device)
            self.notify("on_batch_begin", batch=(x, y), training=False)
            y_pred = self.infer(x)
            # negative log of the probability mass on the candidate set
            loss = (torch.logsumexp(y_pred, 1)
                    - torch.logsumexp(y_pred.masked_fill(y <= 0, -torch.inf), 1)).mean()
            self.history.record_batch("valid_loss", float(loss))
            self.history.record_batch("valid_batch_size", len(rows))
            self.notify("on_batch_end", batch=(x, y), training=False, loss=loss,
                        y_pred=y_pred)
            logits.append(y_pred.cpu())
        score = covering_rate(Y, torch.cat(logits).argmax(1).numpy())
        earlier = [row["valid_covering_rate"] for row in self.history[:-1]
                   if "valid_covering_rate" in row]
        self.history.record("valid_covering_rate", score)
        self.history.record("valid_covering_rate_best", all(score > v for v in earlier))

    # ------------------------------------------------------- training utils
    def step_network(self, network, loss, batch, y_pred):
        """One optimisation step of ``network`` on ``loss``, told to skorch's
        callbacks as a training batch.

        Sends ``on_batch_begin``; back-propagates; sends
        ``on_grad_computed`` with ``network``'s trainable parameters (so that
        e.g. ``GradientNormClipping`` clips them); steps ``optimizer_``
        (other networks' parameters have no gradient and stay unchanged);
        records ``train_loss`` and ``train_batch_size``; sends
        ``on_batch_end`` with ``batch``, ``loss`` and ``y_pred``.

        Parameters
        ----------
        network : nn.Module
            The network that computed ``loss``.
        loss : torch.Tensor
            Scalar loss of the step.
        batch : tuple (X, y)
            The batch's inputs before augmentation and its rows of the
            candidate matrix.
        y_pred : torch.Tensor
            The network's logits for the rows of ``batch``.
        """
        self.notify("on_batch_begin", batch=batch, training=True)
        self.optimizer_.zero_grad(set_to_none=True)
        scaler = getattr(self, "_grad_scaler", None)
        if scaler is None:
            loss.backward()
        else:
            # fp16: scaled backward; callbacks see the true (unscaled) gradients
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer_)
        loss, n_samples = _distributed.average_gradients(self, network, loss, len(batch[0]))
        params = ((name, p) for name, p in network.named_parameters() if p.requires_grad)
        self.notify("on_grad_computed", named_parameters=TeeGenerator(params),
                    X=batch[0], y=batch[1], training=True)
        if scaler is None:
            self.optimizer_.step()
        else:
            scaler.step(self.optimizer_)  # skipped when a gradient is inf/NaN
            scaler.update()
        loss = loss.detach()
        self.history.record_batch("train_loss", float(loss))
        self.history.record_batch("train_batch_size", n_samples)
        self.notify("on_batch_end", batch=batch, training=True, loss=loss,
                    y_pred=y_pred.detach())

    def announce_batches(self, n_steps, ctx):
        """Tell progress bars how many batches this epoch runs: ``n_steps``
        training steps plus the validation batches (skorch's ``ProgressBar``
        estimates the total from the data size before the epoch, which the
        estimators' own batching does not follow)."""
        total = n_steps
        if ctx.valid_data is not None:
            total += -(-len(ctx.valid_data) // self.batch_size)
        for _, cb in getattr(self, "callbacks_", []):
            bar = getattr(cb, "pbar_", None) if isinstance(cb, ProgressBar) else None
            if bar is not None:
                bar.total = total
                bar.refresh()

    @staticmethod
    def n_batches(n_rows, batch_size):
        """Number of chunks :meth:`shuffled_batches` cuts ``n_rows`` rows into."""
        n = -(-n_rows // batch_size)
        return n - 1 if n > 1 and n_rows % batch_size == 1 else n

    @staticmethod
    def check_finite(epoch, terms, where=""):
        """Raise ``FloatingPointError`` naming the epoch and the first term
        (a scalar or a tensor of per-sample values) that is NaN or infinite."""
        values = [torch.as_tensor(v, dtype=torch.float32).detach() for v in terms.values()]
        finite = torch.stack([torch.isfinite(v).all().cpu() for v in values])
        if bool(finite.all()):
            return
        for name, v, ok in zip(terms, values, finite):
            if not ok:
                v = v.reshape(-1)
                raise FloatingPointError(
                    f"Training diverged at epoch {epoch}{where}: the loss term '{name}' is "
                    f"{float(v[~torch.isfinite(v)][0])}. Lower lr, check the inputs for "
                    "extreme values, or normalise features.")

    def shuffled_batches(self, rows, batch_size, ctx):
        """Consecutive chunks of a random permutation of ``rows``."""
        rows = np.asarray(rows)[ctx.rng.permutation(len(rows))]
        chunks = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        if len(chunks) > 1 and len(chunks[-1]) < 2 * _distributed.world(self)[0]:
            # batch norm cannot train on a single sample (on any rank)
            chunks[-2:] = [np.concatenate(chunks[-2:])]
        return _distributed.local_batches(self, chunks)

    # ------------------------------------------------------------ inference
    def infer(self, x):
        """Logits of one batch: the test-time normalisation, then the mean
        of the inference networks' logits (eval mode, no gradient).

        Parameters
        ----------
        x : torch.Tensor
            A batch of inputs as the estimator stores them: ``uint8`` or
            [0, 1] float images ``(B, C, H, W)``, or features ``(B, d)``.

        Returns
        -------
        logits : torch.Tensor of shape (B, n_classes)
        """
        networks = self.inference_networks()
        for network in networks:
            network.eval()
        device = torch.device(self.device_)
        test = Normalize(mean=self.input_mean_, std=self.input_std_)
        with torch.no_grad(), self.mixed_precision():
            x = test(torch.as_tensor(x).to(device), None)
            return torch.stack([net(x) for net in networks]).mean(0).float()

    def forward_iter(self, X, training=False, device="cpu"):
        """Yield the logits of :meth:`infer` batch by batch over ``X``.

        Parameters
        ----------
        X : inputs as in :meth:`predict`
        training : bool, default=False
            Must be False: the estimators' training batches are drawn by
            their own epochs, not by a forward pass.
        device : str, default="cpu"
            Where the yielded tensors go.

        Yields
        ------
        logits : torch.Tensor of shape (batch, n_classes)
        """
        if training:
            raise NotImplementedError(
                f"{type(self).__name__} trains with its own batches (augmented views, "
                "network-specific splits); forward(training=True) has no meaning here.")
        data = X if isinstance(X, InputData) else self._check_predict_X(X)
        batch_size = 2 * self.batch_size
        for start in range(0, len(data), batch_size):
            rows = np.arange(start, min(start + batch_size, len(data)))
            x = _batch_to_device(data, rows, torch.device(self.device_))
            yield self.infer(x).to(device)

    def _predict_logits(self, data):
        # through forward_iter, so that skorch's scoring callbacks can serve
        # the predictions they cached from the batches
        out = [logits.float().cpu()
               for logits in self.forward_iter(data, device=self.device_)]
        return torch.cat(out).cpu() if out else torch.zeros(0, self.n_classes_)

    def _predict_indices(self, data):
        return self._predict_logits(data).argmax(1).numpy()

    def _check_predict_X(self, X):
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")
        if getattr(self, "_diverged", None):
            raise NotFittedError(
                f"This {type(self).__name__} cannot predict: its last fit failed "
                f"({self._diverged}) and left non-finite parameters. Refit it.")
        if isinstance(X, AnnotatedImages):
            X = X.images
        return self._check_X(X, reset=False)

    def predict_proba(self, X):
        """Class probabilities: softmax of the networks' mean logits.

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Samples of the same kind as in :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        logits = self._predict_logits(self._check_predict_X(X))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X):
        """Predicted labels from ``classes_`` (class names when known).

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Samples of the same kind as in :meth:`fit`.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            One predicted class label per sample.
        """
        data = self._check_predict_X(X)
        return self.classes_[self._predict_indices(data)]

    def score(self, X, y=None, sample_weight=None):
        """Accuracy for 1-D labels; covering rate for candidate sets.

        With ``y=None`` and ``X`` the annotator's output, the covering rate
        against the annotator's candidate sets: model selection without any
        true label.

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Samples of the same kind as in :meth:`fit`.
        y : array-like of shape (n,) or (n, C), list of sets, or None
            True labels (1-D) or candidate sets; None when ``X`` is the
            annotator's output.
        sample_weight : array-like of shape (n,), default=None
            Used with 1-D labels.

        Returns
        -------
        score : float
            Accuracy, or the fraction of predictions inside their candidate set.

        Notes
        -----
        In a search over candidate sets, leave ``scoring=None`` (this
        method) or pass :func:`~sklearn_npll.metrics.covering_rate_scorer`:
        scikit-learn's ``scoring="accuracy"`` compares predictions with 1-D
        labels and fails on a candidate matrix ("a mix of
        multilabel-indicator and multiclass targets").
        """
        if y is None:
            if not isinstance(X, AnnotatedImages):
                raise ValueError(
                    "score needs y (labels or candidate sets) unless X is the output of "
                    "VLMPartialAnnotator.transform, which carries candidate sets.")
            y = X.candidates
        is_sets = np.ndim(y) == 2 or (len(y) and isinstance(y[0], (set, frozenset, list, tuple)))
        if not is_sets:
            return super().score(X, y, sample_weight=sample_weight)
        if hasattr(y, "columns") and getattr(y, "ndim", 1) == 2:
            y = self._frame_in_class_order(y)
        Y, _ = check_candidates(y, classes=self.classes_)
        pred = self._predict_indices(self._check_predict_X(X))
        return covering_rate(Y, pred)

    def _frame_in_class_order(self, frame):
        """A DataFrame candidate matrix with its columns in ``classes_``
        order (its column names are class names)."""
        columns = list(frame.columns)
        if columns == list(range(len(columns))) and len(columns) == self.n_classes_:
            return frame.to_numpy()
        unknown = [c for c in columns if c not in set(self.classes_.tolist())]
        if unknown or len(columns) != self.n_classes_:
            raise ValueError(
                f"The columns of y {columns[:10]} must be the fitted classes "
                f"{self.classes_.tolist()[:10]} (one column per class).")
        return frame[list(self.classes_)].to_numpy()

    # ------------------------------------------------- checkpoints, pickling
    # what the networks are built from and predict needs, besides weights
    _fitted_meta = ("classes_", "sample_shape_", "image_size_", "input_mean_", "input_std_",
                    "n_train_samples_", "n_features_in_", "feature_names_in_", "_seed_",
                    "n_threads_")

    def save_params(self, f_params=None, f_optimizer=None, f_criterion=None, f_history=None,
                    use_safetensors=False, f_fitted=None, **kwargs):
        """Save parameters as skorch's ``save_params``, plus the fitted attributes.

        The fitted attributes are those the networks are built from, so that
        :meth:`load_params` can restore into a fresh estimator.

        Parameters
        ----------
        f_params : str, path-like or file, default=None
            File for ``module_`` (network A); save the other modules with
            ``f_module2``, ``f_coreg_state``, ... in ``**kwargs``.
        f_optimizer : str, path-like or file, default=None
            File for ``optimizer_``, as in skorch.
        f_criterion : str, path-like or file, default=None
            As in skorch (these estimators have no criterion module).
        f_history : str, path-like or file, default=None
            JSON file for the history, as in skorch.
        use_safetensors : bool, default=False
            Save with safetensors instead of pickle, as in skorch.
        f_fitted : str or path-like, default=None
            A JSON file for the classes, input shape, normalisation and
            number of training samples.
        **kwargs
            ``f_<module or optimizer name>`` for the other components.

        Returns
        -------
        None
            The files are written.
        """
        if f_fitted is not None:
            meta = {name: _to_json(getattr(self, name)) for name in self._fitted_meta
                    if hasattr(self, name)}
            with open(f_fitted, "w", encoding="utf-8") as f:
                json.dump(meta, f)
        return super().save_params(f_params=f_params, f_optimizer=f_optimizer,
                                   f_criterion=f_criterion, f_history=f_history,
                                   use_safetensors=use_safetensors, **kwargs)

    def load_params(self, f_params=None, f_optimizer=None, f_criterion=None, f_history=None,
                    checkpoint=None, use_safetensors=False, f_fitted=None, **kwargs):
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
            As in skorch (these estimators have no criterion module).
        f_history : str, path-like or file, default=None
            JSON file of the history, as in skorch.
        checkpoint : skorch Checkpoint, default=None
            As in skorch; a ``TrainingCheckpoint`` loads everything it saved,
            or raises.
        use_safetensors : bool, default=False
            Load safetensors files, as in skorch.
        f_fitted : str or path-like, default=None
            The file written by ``save_params(f_fitted=...)``. Needed to load
            into a fresh estimator: its networks and optimizer are then built
            from it before the weights are loaded. Load every network
            (``f_params``, ``f_module2``, ...) that predicts.
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
        """
        if hasattr(checkpoint, "restore"):
            # a TrainingCheckpoint loads everything it saved, or raises
            checkpoint.restore(self)
            return
        if f_fitted is not None:
            with open(f_fitted, encoding="utf-8") as f:
                meta = json.load(f)
            for name in ("n_features_in_", "feature_names_in_"):
                if name not in meta and hasattr(self, name):
                    delattr(self, name)
            for name, value in meta.items():
                setattr(self, name, _from_json(value))
            self.n_classes_ = len(self.classes_)
            self.device_ = _resolve_device(self.device)
            self.initialize()
        elif not self.initialized_:
            raise NotInitializedError(
                f"This {type(self).__name__} is not fitted: pass f_fitted=, the file "
                "written by save_params(f_fitted=...), which holds the classes, input "
                "shape and normalisation its networks are built from.")
        with self._on_resolved_device():
            return super().load_params(f_params=f_params, f_optimizer=f_optimizer,
                                       f_criterion=f_criterion, f_history=f_history,
                                       checkpoint=checkpoint,
                                       use_safetensors=use_safetensors, **kwargs)

    # --------------------------------------------- small models for serving
    def _prediction_state(self):
        """A copy of ``__dict__`` holding what ``predict`` needs: each
        inference network's prediction path (``for_prediction``), no
        optimizer, no other module (Co-Reg's prototypes and loss histories,
        PRODEN's label weights), callbacks reset."""
        state = dict(self.__dict__)
        inference = {id(net) for net in self.inference_networks()}
        for name in self._modules:
            module = state.get(name + "_")
            keep = module is not None and id(module) in inference
            state[name + "_"] = module.for_prediction() if keep else None
        for name in self._optimizers:
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


"""The base of the partial-label estimators: a scikit-learn classifier on
skorch's ``NeuralNet`` (callbacks, history, ``module__*`` routing,
save/load) whose epochs are run by a method's trainer.

What lives where:

- this module: the contract (parameters and their constraints, the subclass
  hooks, ``fit``, ``partial_fit``, the epoch loop, the skorch plumbing that
  builds callbacks, networks and the optimizer);
- :mod:`.validation`: what X and y may be;
- :mod:`.context`: the per-fit state handed to the trainer;
- :mod:`.training`: the trainer base (batches, steps, checks);
- :mod:`.prediction`: ``infer``, ``predict``, ``predict_proba``, ``score``;
- :mod:`.persistence`: save, load, pickles;
- :mod:`.skorch_compat`: skorch's private attributes and unused loop methods;
- :mod:`.data_parallel`: the hooks of ``torchrun`` training.
"""

import contextlib
import copy
import inspect
import warnings
import zlib
from numbers import Integral, Real

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import (EpochTimer, LRScheduler, PassthroughScoring, PrintLog,
                              ProgressBar)
from skorch.callbacks.scoring import ScoringBase
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
# scikit-learn private: its parameter validation, used as its own estimators do
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
)
from torch import nn

from .._data.image_store import check_image_size
from .._nn.augment import PerSample, channel_stats, make_augmenters
from .._nn.backbones import default_encoder
from .._nn.networks import reset_parameters
from .._runtime import autocast_encoders, resolve_device, resolve_precision, use_channels_last
from ..callbacks.lr import CosineLR
from . import data_parallel
from .context import make_context
from .persistence import PersistenceMixin, random_state_dict
from .prediction import PredictionMixin
from .skorch_callbacks import check_callbacks, trained_split, training_split, validation_split
from .skorch_compat import UnusedSkorchLoop, registered_modules
from .threads import with_fixed_threads
from .validation import check_partial_fit_classes, check_training_data

__all__ = ["PartialLabelNet"]


class PartialLabelNet(PredictionMixin, PersistenceMixin, ClassifierMixin, UnusedSkorchLoop,
                      NeuralNet):
    """Base of the partial-label estimators (not public).

    A subclass defines its constructor (every parameter explicit, assigned
    as given, then ``finish_init(self, kwargs)``), its networks
    (:meth:`build_networks`), the networks that predict
    (:meth:`inference_networks`) and its training, either as a
    ``trainer_class`` (a :class:`~sklearn_npll._estimator.training.Trainer`
    subclass; the default :meth:`run_epoch` hands it every epoch) or by
    overriding :meth:`run_epoch`. :meth:`after_fit` sets the fitted
    attributes the method derives at the end of training.
    """

    # skorch internals that these estimators do not expose as parameters:
    # data loading, criterion and compilation are handled here.
    prefixes_ = ["callbacks"]
    compile = False
    use_caching = "auto"
    criterion = None
    torch_load_kwargs = None
    #: The method's training loop (a Trainer subclass), built once per fit call.
    trainer_class = None
    #: Whether the trainer supports data-parallel training under torchrun.
    _data_parallel = False
    #: Whether a fresh fit warns about classes in no candidate set.
    _check_class_coverage = True
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
        "on_bad_image": [StrOptions({"raise", "skip"})],
        "precision": [StrOptions({"auto", "fp32", "bf16", "fp16"})],
        "device_store": ["boolean", StrOptions({"auto"})],
    }

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
        """Return ``{attribute name without '_': nn.Module}``; the entries
        named ``module``, ``module2``, ... are the trained networks (a
        parameter group of ``optimizer_`` each), the others the method's
        state (saved with checkpoints)."""
        raise NotImplementedError

    def inference_networks(self):
        """The networks whose mean logits make a prediction."""
        raise NotImplementedError

    def run_epoch(self, epoch, ctx):
        """Train one epoch (0-based); return ``{term name: mean value}``.

        By default the fit's trainer (an instance of ``trainer_class``,
        ``ctx.trainer``) runs it.
        """
        return ctx.trainer.run_epoch(epoch)

    def after_fit(self, ctx):
        """Set the fitted attributes derived at the end of training."""

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
        data_parallel.prepare_fit(self)
        with self._on_resolved_device():
            super().initialize()
        data_parallel.after_initialize(self)
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
        if getattr(self, "device_", None):
            self.device = self.device_
        elif requested is None or (isinstance(requested, str) and requested == "auto"):
            self.device = str(resolve_device(requested))
        try:
            yield
        finally:
            self.device = requested

    def initialize_criterion(self):
        """No criterion: each method computes its own losses."""
        return self

    def initialize_module(self):
        """Build the networks (:meth:`build_networks`) on the fit's device,
        each encoder from its own seed."""
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
        for name, module in networks.items():
            module = module.to(self.device_)
            if use_channels_last(module, self.device_):
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
        """Names of the trained networks (``module``, ``module2``, ...)."""
        return [name for name in registered_modules(self) if name.startswith("module")]

    def training_networks(self):
        """The trained networks (``module_``, ``module2_``, ...)."""
        return [getattr(self, name + "_") for name in self.network_names()]

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
        groups = [{"params": [p for p in net.parameters() if p.requires_grad]}
                  for net in self.training_networks()]
        self.optimizer_ = self.optimizer(groups, **kwargs)
        return self

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
        """scikit-learn's metadata routing: a consumer only (no internal
        splitter to route ``groups`` to, unlike skorch's ``train_split``).

        Returns
        -------
        routing : MetadataRequest
        """
        return BaseEstimator.get_metadata_routing(self)

    # ------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Fit the networks from candidate sets.

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
        return self._fit(X, y, fresh=not self.warm_start or not self.initialized_,
                         epochs=None)

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
        classes : array-like of shape (n_classes,), default=None
            The class names (None: those of ``y``). On the first call they
            become ``classes_``: labels and sets may use any of them (a class
            no sample holds is kept, with a warning), a candidate matrix has
            one column per class, in this order. Later calls must repeat
            them or pass None.

        Returns
        -------
        self : object
            The estimator, trained one epoch further.
        """
        return self._fit(X, y, fresh=not self.initialized_, epochs=1,
                         classes=check_partial_fit_classes(self, classes))

    @with_fixed_threads
    def _fit(self, X, y, *, fresh, epochs, classes=None, **fit_args):
        """Every fit entry: validate the parameters (each call, as
        scikit-learn's SGD estimators do), initialise when ``fresh``, train
        ``epochs`` epochs (None: up to ``max_epochs``). ``fit_args`` are the
        method's fit parameters, fields of the fit context (``verified``,
        ``soft_targets``)."""
        self._validate_params()
        prepared = None
        if fresh:
            prepared = self._prepare_fit(X, y, classes)
            self.initialize()
            self._training_state_dropped = False
        elif epochs is None and len(self.history) >= self.max_epochs:
            warnings.warn(
                f"warm_start: {type(self).__name__} has trained {len(self.history)} epochs, "
                f"max_epochs={self.max_epochs}; nothing to do. Raise max_epochs to train "
                "longer, or call partial_fit for one more epoch.", UserWarning)
        self._check_can_continue()
        check_callbacks(self)
        self.notify("on_train_begin", X=X, y=y)
        self.fit_loop(X, y, epochs=epochs, prepared=prepared, **fit_args)
        self.notify("on_train_end", X=X, y=y)
        return self

    def _validate_params(self):
        validate_parameter_constraints(
            self._parameter_constraints, self.get_params(deep=False),
            caller_name=type(self).__name__)
        check_image_size(self.image_size)

    def _fit_seed(self, purpose):
        """A seed for one purpose of this fit, derived from ``random_state``."""
        return (self._seed_ + zlib.crc32(purpose.encode())) % (2**31 - 1)

    def _prepare_fit(self, X, y, classes=None):
        """Validate the training data of a fresh fit and set the fitted
        attributes the networks are built from."""
        for attr in ("_diverged", "_random_states"):
            self.__dict__.pop(attr, None)
        data, Y, classes = check_training_data(self, X, y, classes=classes)
        self.classes_ = classes
        self.n_classes_ = len(classes)
        self.candidate_counts_ = Y.sum(axis=0, dtype=np.int64)
        self.sample_shape_ = tuple(data.sample_shape)
        self.device_ = str(resolve_device(self.device))
        self.precision_ = resolve_precision(self.precision, self.device_)
        self._seed_ = int(check_random_state(self.random_state).randint(2**31 - 1))
        self.n_train_samples_ = len(data)
        mean, std = channel_stats(self._stat_batches(data))
        self.input_mean_, self.input_std_ = mean, std
        return data, Y

    @staticmethod
    def _stat_batches(data, max_samples=20_000, batch_size=1024):
        """Batches of all samples, or of a fixed random subset of large data."""
        rows = np.arange(len(data))
        if len(rows) > max_samples:
            rows = np.sort(np.random.RandomState(0).choice(rows, max_samples, replace=False))
        return (data.get_batch(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size))

    def _augmenters(self):
        augmenters = make_augmenters(self.sample_shape_, mean=self.input_mean_,
                                     std=self.input_std_, flip=self.flip,
                                     padding=self.padding)
        for kind, user in (("weak", self.weak_augment), ("strong", self.strong_augment)):
            if user is not None:
                augmenters[kind] = PerSample(user, mean=self.input_mean_, std=self.input_std_)
        return augmenters

    def _precision(self):
        # resolved on the current device: a model trained on CUDA with "auto"
        # and loaded on a CPU predicts in fp32
        return resolve_precision(getattr(self, "precision", "fp32"), self.device_)

    def mixed_precision(self):
        """A context in which the networks' encoders run in ``precision``
        (``torch.autocast``) and return float32; heads, losses and label
        bookkeeping stay in float32."""
        return autocast_encoders(self.training_networks(), self._precision(), self.device_)

    def fit_loop(self, X, y=None, epochs=None, prepared=None, **fit_args):
        """Train ``epochs`` epochs (None: up to ``max_epochs``) on a new
        :class:`~sklearn_npll._estimator.context.FitContext`.

        ``prepared`` holds the data and candidate matrix a fresh fit has
        already validated; a continued fit validates ``X`` and ``y`` here.
        """
        if prepared is None:
            prepared = check_training_data(self, X, y, reset=False)[:2]
        data, Y = prepared
        if len(data) != self.n_train_samples_:
            raise ValueError(
                f"warm_start continues a fit on {self.n_train_samples_} samples; got "
                f"{len(data)}. Refit with warm_start=False to train on other data.")
        ctx = make_context(self, data, Y, **fit_args)
        start = len(self.history)
        self._run_epochs(ctx, start, self.max_epochs if epochs is None else start + epochs)
        self.after_fit(ctx)
        return self

    def _run_epochs(self, ctx, start, stop):
        """The epoch loop: each epoch's terms into the history, the hold-out
        scored, the generator states saved for an exact resume."""
        finished, rows_before = True, len(self.history)
        try:
            for epoch in range(start, stop):
                finished, rows_before = False, len(self.history)
                ctx.trainer.trained_rows = []
                self.notify("on_epoch_begin", dataset_train=training_split(ctx),
                            dataset_valid=validation_split(ctx))
                with self.mixed_precision():
                    terms = self.run_epoch(epoch, ctx)
                for name, value in terms.items():
                    self.history.record(name, value)
                if ctx.valid_data is not None:
                    self._score_hold_out(ctx)
                self._random_states = random_state_dict(ctx.generator, ctx.rng,
                                                        len(self.history))
                finished = True
                # the samples of the epoch's steps, as the predictions were cached
                self.notify("on_epoch_end", dataset_train=trained_split(ctx),
                            dataset_valid=validation_split(ctx))
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

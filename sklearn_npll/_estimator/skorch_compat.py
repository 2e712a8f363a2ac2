"""Every use of skorch's private attributes, and the skorch methods these
estimators do not use.

The estimators are skorch ``NeuralNet`` subclasses for skorch's callbacks,
history, ``module__*`` routing and save/load, but they run their own epochs:
each method draws its own batches (several augmented views, network-specific
splits), so skorch's per-batch loop is replaced, not extended. What that
replacement needs from skorch's internals is here, in one place, so that a
skorch upgrade has one module to check (skorch >= 1.0, < 2; 1.4 tested).
"""

__all__ = ["UnusedSkorchLoop", "finish_init", "registered_criteria", "registered_modules",
           "registered_optimizers"]


def finish_init(net, kwargs):
    """Do what the end of ``NeuralNet.__init__`` does with its ``**kwargs``.

    The estimators do not call ``NeuralNet.__init__``: it would register
    skorch's data-loading parameters (``iterator_train``, ``dataset``,
    ``train_split``, ``criterion``, ...) as estimator parameters that they do
    not use. Their constructors assign their own parameters, then route the
    rest (``module__*``, ``optimizer__*``, ``callbacks__*``) here.
    """
    history = kwargs.pop("history", None)
    initialized = kwargs.pop("initialized_", False)
    virtual_params = kwargs.pop("virtual_params_", dict())
    kwargs.pop("_params_to_validate", None)
    # skorch private: the names its _validate_params checks against prefixes_
    net._params_to_validate = set(kwargs.keys())
    vars(net).update(kwargs)
    net.history_ = history
    net.initialized_ = initialized
    net.virtual_params_ = virtual_params


def registered_modules(net):
    """Names of the modules skorch registered (``module``, ``module2``,
    method state such as ``coreg_state``), in registration order."""
    return list(net._modules)  # skorch private


def registered_optimizers(net):
    """Names of the optimizers skorch registered (``optimizer``)."""
    return list(net._optimizers)  # skorch private


def registered_criteria(net):
    """Names of the criteria skorch registered (none: each method computes
    its own losses)."""
    return list(net._criteria)  # skorch private


# skorch's per-batch training machinery, and what to use instead
_UNUSED = {
    "get_iterator": "Use forward_iter for batched inference.",
    "get_dataset": "Pass X (and y) to fit, predict or score.",
    "get_split_datasets": "Set validation_fraction for a hold-out.",
    "train_step": "Training steps go through the method's trainer.",
    "train_step_single": "Training steps go through the method's trainer.",
    "get_train_step_accumulator": "Training steps go through the method's trainer.",
    "validation_step": "Set validation_fraction for a hold-out.",
    "evaluation_step": "Use infer for the logits of one batch.",
    "run_single_epoch": "Call partial_fit to train one more epoch.",
    "get_loss": "The loss terms of each epoch are in history_.",
    "check_data": "fit validates X and y.",
}


def _unused(name, advice):
    def method(self, *args, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__}.{name} is skorch's per-batch training machinery, "
            "which this estimator does not use: its epochs draw their own batches "
            f"(augmented views, network-specific splits). {advice}")

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Not available: {advice}"
    return method


class UnusedSkorchLoop:
    """Mixin: skorch's per-batch loop methods, each raising a
    ``NotImplementedError`` that says what to use instead."""


for _name, _advice in _UNUSED.items():
    setattr(UnusedSkorchLoop, _name, _unused(_name, _advice))
del _name, _advice

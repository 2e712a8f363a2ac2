"""skorch callbacks for the partial-label estimators."""

from skorch.callbacks import Checkpoint

from ._callbacks import CosineLR

__all__ = ["CosineLR", "TrainingCheckpoint"]


class TrainingCheckpoint(Checkpoint):
    """A skorch ``Checkpoint`` that saves everything a resumed fit needs.

    Every network (``module_``, ``module2_``, ...), every other registered
    module (Co-Reg's shared ``coreg_state_``: prototypes and division loss
    histories), every optimizer and the history are written as
    ``<name>.pt`` files plus ``history.json`` in ``dirname``. Pass the same
    callback to skorch's ``LoadInitState`` to resume: the fit then continues
    the schedule from the last saved epoch up to ``max_epochs``.

    Parameters
    ----------
    dirname : str, default=""
        Folder of the files.
    monitor : str, callable or None, default=None
        When to save, as in skorch's ``Checkpoint``; None saves every epoch.
    **kwargs
        Other ``Checkpoint`` arguments (``fn_prefix``, ``f_pickle``, ...).

    Examples
    --------
    >>> from skorch.callbacks import LoadInitState
    >>> from sklearn_npll import CoRegClassifier
    >>> cp = TrainingCheckpoint(dirname="coreg_run")
    >>> clf = CoRegClassifier(callbacks=[("checkpoint", cp),
    ...                                  ("resume", LoadInitState(cp))])
    """

    def __init__(self, dirname="", monitor=None, **kwargs):
        kwargs = {"f_params": None, "f_optimizer": None, "f_criterion": None,
                  "f_history": "history.json", **kwargs}
        super().__init__(dirname=dirname, monitor=monitor, **kwargs)

    @staticmethod
    def _component_files(net):
        names = [*net._modules, *net._optimizers]
        return {f"f_{name}": f"{name}.pt" for name in names}

    def get_formatted_files(self, net):
        files = super().get_formatted_files(net)
        for key, name in self._component_files(net).items():
            files[key] = self._format_target(net, name, -1)
        return files

    def save_model(self, net):
        for key, name in self._component_files(net).items():
            self._save_params(self._format_target(net, name, -1), net, key, key[2:])
        super().save_model(net)

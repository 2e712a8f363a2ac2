"""Parameters: every estimator declares a constraint for each of them, and
every fit entry (a fresh fit, a warm-start fit, each partial_fit) checks
them, as scikit-learn's SGD estimators do."""

import inspect

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_npll import (CCClassifier, CoRegClassifier, PRODENClassifier,
                          VLMPartialAnnotator)

ESTIMATORS = [CoRegClassifier, PRODENClassifier, CCClassifier, VLMPartialAnnotator]
FAST = {CoRegClassifier: dict(max_epochs=2, warmup_epochs=1, start_contrastive=0,
                              batch_size=8, queue_size=16, proj_dim=4),
        PRODENClassifier: dict(max_epochs=2, batch_size=8),
        CCClassifier: dict(max_epochs=2, batch_size=8)}
X = np.random.RandomState(0).normal(size=(24, 3)).astype(np.float32)
Y = np.arange(24) % 3


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_every_parameter_has_a_constraint(cls):
    names = [p.name for p in inspect.signature(cls.__init__).parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
    assert set(names) - set(cls._parameter_constraints) == set()


@pytest.mark.parametrize("cls", [CoRegClassifier, PRODENClassifier, CCClassifier])
@pytest.mark.parametrize("entry", ["warm_start", "partial_fit"])
def test_every_fit_entry_validates(cls, entry):
    clf = cls(random_state=0, warm_start=entry == "warm_start", **FAST[cls])
    if entry == "warm_start":
        clf.fit(X, Y)
        clf.set_params(max_epochs=3, lr=-1.0)
        with pytest.raises(InvalidParameterError, match="'lr'"):
            clf.fit(X, Y)
    else:
        clf.partial_fit(X, Y)
        clf.set_params(lr=-1.0)
        with pytest.raises(InvalidParameterError, match="'lr'"):
            clf.partial_fit(X, Y)
    assert len(clf.history) == (2 if entry == "warm_start" else 1)  # nothing trained


@pytest.mark.parametrize("cls", [PRODENClassifier, CCClassifier])
def test_augment_is_validated(cls):
    with pytest.raises(InvalidParameterError, match="'augment'"):
        cls(augment="heavy", **FAST[cls]).fit(X, Y)

"""Inputs a careless or unlucky user passes, divergence and interruption:
every case either works or fails loudly with a message naming the culprit."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from skorch.callbacks import Callback
from sklearn.exceptions import NotFittedError

from sklearn_npll import CCClassifier, CoRegClassifier, PRODENClassifier

from _common import NaNEncoder

FAST = dict(batch_size=16, module__hidden_sizes=(16,), random_state=0)
COREG_FAST = dict(queue_size=32, proj_dim=8, **FAST)


def blobs(n_per_class=12, n_classes=3, d=5, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(0, 4, (n_classes, d))
    X = np.concatenate([rng.normal(c, 1.0, (n_per_class, d)) for c in centers])
    return X.astype(np.float32), np.repeat(np.arange(n_classes), n_per_class)


X, y = blobs()
Y = np.eye(3, dtype=np.uint8)[y]
Y[::3, (y[::3] + 1) % 3] = 1


# ------------------------------------------------------------------ inputs
@pytest.mark.parametrize("target, match", [
    (np.zeros(len(y), int), "single class"),
    ([{"cat"}] * len(y), "single class"),
    (Y[:, :1], "single column of 0/1"),
])
def test_degenerate_targets_raise_naming_y(target, match):
    with pytest.raises(ValueError, match=match):
        CCClassifier(max_epochs=1, **FAST).fit(X, target)


def test_a_class_no_set_holds_warns():
    Y4 = np.c_[Y, np.zeros(len(Y), np.uint8)]
    with pytest.warns(UserWarning, match=r"1 class\(es\) appear in no candidate set: \[3\]"):
        clf = CCClassifier(max_epochs=1, **FAST).fit(X, Y4)
    assert clf.n_classes_ == 4


def test_minus_one_next_to_zero_warns_that_it_is_a_class():
    labels = y.copy()
    labels[:4] = -1
    with pytest.warns(UserWarning, match="label -1 in 4 row"):
        clf = CCClassifier(max_epochs=1, **FAST).fit(X, labels)
    assert -1 in clf.classes_.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # {-1, 1} is the usual binary coding: no warning
        CCClassifier(max_epochs=1, **FAST).fit(X[y < 2], np.where(y[y < 2] == 0, -1, 1))


def test_sparse_candidate_matrix_fits_like_the_dense_one():
    dense = CCClassifier(max_epochs=2, **FAST).fit(X, Y)
    for matrix in (sp.csr_matrix(Y), sp.csr_array(Y)):
        sparse = CCClassifier(max_epochs=2, **FAST).fit(X, matrix)
        np.testing.assert_array_equal(sparse.classes_, dense.classes_)
        np.testing.assert_array_equal(sparse.predict_proba(X), dense.predict_proba(X))


def test_dataframe_candidates_keep_column_names_as_classes():
    frame = pd.DataFrame(Y, columns=["cat", "dog", "fox"])
    clf = CCClassifier(max_epochs=2, **FAST).fit(X, frame)
    assert clf.classes_.tolist() == ["cat", "dog", "fox"]
    assert set(clf.predict(X)) <= {"cat", "dog", "fox"}
    # score reads columns by name, in any order
    shuffled = frame[["fox", "cat", "dog"]]
    assert clf.score(X, shuffled) == clf.score(X, frame)
    with pytest.raises(ValueError, match="columns of y"):
        clf.score(X, frame.rename(columns={"fox": "owl"}))


def test_mixed_name_types_advice_matches_the_api():
    sets = [{"cat", 1} if i % 2 else {"dog"} for i in range(len(y))]
    with pytest.raises(ValueError, match=r"mix types \['int', 'str'\].*single type") as info:
        CCClassifier(max_epochs=1, **FAST).fit(X, sets)
    assert "classes=" not in str(info.value)


@pytest.mark.parametrize("empty", [[], np.array([])])
def test_empty_X_is_named(empty):
    with pytest.raises(ValueError, match="X is empty"):
        CCClassifier(max_epochs=1, **FAST).fit(empty, [])


# ---------------------------------------------------------------- training
def test_max_epochs_within_warmup_warns():
    with pytest.warns(UserWarning, match="max_epochs=2 <= warmup_epochs=50.*trust_"):
        clf = CoRegClassifier(max_epochs=2, **COREG_FAST).fit(X, Y)
    assert clf.trust_ is None


class PoisonAfterEpoch(Callback):
    """Sets network A's head to NaN after the given epoch, as a huge lr does."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            net.module_.classifier.weight.data.fill_(float("nan"))


def test_nan_weights_stop_at_the_division_with_the_divergence_message():
    clf = CoRegClassifier(max_epochs=3, warmup_epochs=1,
                          callbacks=[("poison", PoisonAfterEpoch(1))], **COREG_FAST)
    with pytest.raises(FloatingPointError, match=r"epoch 1 \(division, network A\)"):
        clf.fit(X, Y)
    with pytest.raises(NotFittedError, match="cannot predict.*diverged"):
        clf.predict(X)


@pytest.mark.parametrize("cls", [PRODENClassifier, CCClassifier])
def test_diverged_estimator_refuses_to_predict_until_refitted(cls):
    clf = cls(NaNEncoder, max_epochs=1, batch_size=16, random_state=0)
    with pytest.raises(FloatingPointError, match="diverged"):
        clf.fit(X, Y)
    with pytest.raises(NotFittedError, match="cannot predict"):
        clf.predict(X)
    clf.set_params(module=None, module__hidden_sizes=(8,)).fit(X, Y)
    assert clf.predict(X).shape == (len(X),)


class InterruptInEpoch(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("cls", [CoRegClassifier, CCClassifier])
def test_an_interrupted_epoch_is_not_recorded(cls):
    kw = dict(warmup_epochs=1, **COREG_FAST) if cls is CoRegClassifier else FAST
    clf = cls(max_epochs=4, callbacks=[("stop", InterruptInEpoch(2))], **kw)
    with pytest.warns(RuntimeWarning, match="interrupted during epoch 2.*1 finished"):
        clf.fit(X, Y)
    assert len(clf.history_) == 1 and clf.history_[-1, "epoch"] == 1

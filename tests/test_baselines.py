"""The partial-label baselines PRODEN and CC: fitting, their losses and
state, reproducibility, scikit-learn compatibility and the common checks."""

import math
import pickle

import numpy as np
import pytest
import torch
from skorch.callbacks import LoadInitState
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from sklearn_npll import (AnnotatedImages, CCClassifier, PRODENClassifier,
                          covering_rate_scorer, make_partial_labels)
from sklearn_npll._nn.backbones import MLP, SmallCNN
from sklearn_npll._nn.networks import ClassifierNetwork
from sklearn_npll.baselines import cc_loss, proden_loss
from sklearn_npll.callbacks import TrainingCheckpoint

from _common import EXPECTED_FAILED_CHECKS, NaNEncoder

ESTIMATORS = [PRODENClassifier, CCClassifier]
FAST = dict(batch_size=16, module__hidden_sizes=(32,), lr=0.05, random_state=0)


def blobs(n_per_class=30, n_classes=3, d=5, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(0, 4, (n_classes, d))
    X = np.concatenate([rng.normal(c, 1.0, (n_per_class, d)) for c in centers])
    return X.astype(np.float32), np.repeat(np.arange(n_classes), n_per_class)


@pytest.fixture(scope="module")
def data():
    X, y = blobs()
    return X, y, make_partial_labels(y, partial_rate=0.3, noise_rate=0.1, random_state=0)


@pytest.fixture(scope="module")
def fitted(data):
    X, _, Y = data
    return {cls: cls(max_epochs=6, **FAST).fit(X, Y) for cls in ESTIMATORS}


class LinearEncoder(nn.Module):
    """No batch norm: train-mode and eval-mode outputs agree."""

    def __init__(self, d=5, width=4):
        super().__init__()
        self.layer = nn.Linear(d, width)

    def forward(self, x):
        return torch.tanh(self.layer(x))


def test_defaults_match_coreg_style():
    for cls in ESTIMATORS:
        clf = cls()
        assert (clf.max_epochs, clf.batch_size, clf.lr) == (100, 256, 0.01)
        assert (clf.momentum, clf.weight_decay, clf.augment) == (0.9, 5e-4, "weak")
        assert clf.optimizer is torch.optim.SGD and clf.device == "auto"


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_fit_predict_proba_and_history(cls, data, fitted):
    X, y, Y = data
    clf = fitted[cls]
    assert list(clf.classes_) == [0, 1, 2]
    assert isinstance(clf.module_, ClassifierNetwork)
    assert isinstance(clf.module_.encoder, MLP)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(X))
    assert clf.score(X, y) > 0.8
    assert 0 <= clf.score(X, Y) <= 1  # covering rate for candidate sets
    row = clf.history_[-1]
    for key in ("loss", "train_loss", "train_batch_count", "lr", "dur"):
        assert key in row, key
    assert row["train_batch_count"] == math.ceil(len(X) / 16)
    assert clf.history_[-1, "loss"] < clf.history_[0, "loss"]
    dist = clf.label_distribution_
    assert dist.shape == Y.shape
    np.testing.assert_allclose(dist.sum(1), 1, rtol=1e-5)
    assert (dist[Y == 0] == 0).all()


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_tiny_grey_images_through_the_annotation_container(cls):
    rng = np.random.RandomState(0)
    y = np.repeat([0, 1], 20)
    images = np.zeros((40, 8, 8), np.uint8)
    images[y == 0, :, :4] = 200
    images[y == 1, :, 4:] = 200
    images = np.clip(images + rng.randint(0, 40, images.shape), 0, 255).astype(np.uint8)
    Y = make_partial_labels(y, 0.2, 0.0, random_state=0)
    container = AnnotatedImages(images, Y, np.array(["left", "right"]),
                                np.where(Y == 1, np.arange(2), -1))
    clf = cls(max_epochs=3, batch_size=8, flip=False, augment="strong",
              random_state=0).fit(container)
    assert isinstance(clf.module_.encoder, SmallCNN)
    assert list(clf.classes_) == ["left", "right"]
    assert set(clf.predict(images)) <= {"left", "right"}
    assert clf.predict_proba(images).shape == (40, 2)
    assert 0 <= clf.score(container) <= 1


def test_proden_weights_stay_on_the_candidate_simplex_and_move(data, fitted):
    X, _, Y = data
    clf = fitted[PRODENClassifier]
    w = clf.proden_state_.weights.numpy()
    assert (w[Y == 0] == 0).all()
    np.testing.assert_allclose(w.sum(1), 1, rtol=1e-5)
    uniform = Y / Y.sum(1, keepdims=True)
    ambiguous = Y.sum(1) > 1
    assert np.abs(w - uniform)[ambiguous].max(1).mean() > 0.1
    np.testing.assert_array_equal(clf.label_distribution_, w)
    assert clf.history_[-1, "mean_max_weight"] > clf.history_[0, "mean_max_weight"]


def test_proden_first_step_uses_uniform_weights_then_the_predictions(data):
    """With lr=0 the network stays as initialised: the first loss is the
    cross-entropy against uniform weights over each set, and the weights
    become the renormalised predictions restricted to the set."""
    X, _, Y = data
    clf = PRODENClassifier(LinearEncoder, max_epochs=1, batch_size=len(X), lr=0.0,
                           augment="none", random_state=0).fit(X, Y)
    p = clf.predict_proba(X)
    uniform = Y / Y.sum(1, keepdims=True)
    expected_loss = -(uniform * np.log(p)).sum(1).mean()
    assert clf.history_[0, "loss"] == pytest.approx(expected_loss, rel=1e-5)
    expected_w = Y * p / (Y * p).sum(1, keepdims=True)
    np.testing.assert_allclose(clf.proden_state_.weights.numpy(), expected_w, rtol=1e-5)


def test_losses_on_a_hand_example():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]))
    Y = torch.tensor([[1, 1, 0], [0, 0, 1]])
    assert cc_loss(logits, Y).item() == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2)
    full = torch.ones(2, 3)
    assert cc_loss(logits, full).item() == pytest.approx(0.0, abs=1e-6)
    w = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert proden_loss(logits, w).item() == pytest.approx(
        -(0.5 * math.log(0.5) + 0.5 * math.log(0.25) + math.log(0.5)) / 2)
    # stays finite where the set's mass underflows
    far = torch.tensor([[200.0, -200.0]])
    assert math.isfinite(cc_loss(far, torch.tensor([[0, 1]])).item())


def test_cc_loss_in_the_estimator_is_minus_log_set_mass(data):
    X, _, Y = data
    clf = CCClassifier(LinearEncoder, max_epochs=1, batch_size=len(X), lr=0.0,
                       augment="none", random_state=0).fit(X, Y)
    p = clf.predict_proba(X)
    expected = -np.log((p * Y).sum(1)).mean()
    assert clf.history_[0, "loss"] == pytest.approx(expected, rel=1e-5)


def test_cc_on_true_labels_is_the_supervised_upper_bound(data):
    X, y, _ = data
    clf = CCClassifier(max_epochs=4, **FAST).fit(X, y)
    np.testing.assert_array_equal(clf.label_distribution_, np.eye(3)[y])
    assert clf.score(X, y) > 0.9


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_same_seed_same_predictions_other_seed_differs(cls, data):
    X, _, Y = data
    kw = {k: v for k, v in FAST.items() if k != "random_state"}
    p1 = cls(max_epochs=2, random_state=1, **kw).fit(X, Y).predict_proba(X)
    p2 = cls(max_epochs=2, random_state=1, **kw).fit(X, Y).predict_proba(X)
    p3 = cls(max_epochs=2, random_state=2, **kw).fit(X, Y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(p1, p3)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_clone_and_grid_search_with_candidate_matrix(cls, data):
    X, _, Y = data
    est = cls(max_epochs=2, **FAST)
    twin = clone(est)
    assert twin.get_params()["module__hidden_sizes"] == (32,)
    search = GridSearchCV(est, {"lr": [0.01, 0.05]}, cv=2, scoring=covering_rate_scorer,
                          error_score="raise").fit(X, Y)
    assert set(search.cv_results_["param_lr"]) == {0.01, 0.05}
    assert 0 <= search.best_score_ <= 1


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_pickle_round_trip(cls, data, fitted):
    X = data[0]
    clf = fitted[cls]
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(again.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    assert again.device == "auto" and again.device_ == "cpu"


def test_proden_checkpoint_carries_the_weights(data, tmp_path):
    X, _, Y = data
    kw = dict(callbacks=[("cp", TrainingCheckpoint(str(tmp_path)))], **FAST)
    first = PRODENClassifier(max_epochs=2, **kw).fit(X, Y)
    folder, = tmp_path.glob("epoch-0002-*")
    assert {"module.pt", "proden_state.pt", "optimizer.pt"} <= {
        p.name for p in folder.iterdir()}
    cp = TrainingCheckpoint(str(tmp_path))
    # nothing left to train: the loaded weights are kept, not re-started
    loaded = PRODENClassifier(max_epochs=2, callbacks=[("load", LoadInitState(cp))],
                              **FAST).fit(X, Y)
    np.testing.assert_array_equal(loaded.proden_state_.weights.numpy(),
                                  first.proden_state_.weights.numpy())
    resumed = PRODENClassifier(max_epochs=3, callbacks=[("load", LoadInitState(cp))],
                               **FAST).fit(X, Y)
    assert [row["epoch"] for row in resumed.history_] == [1, 2, 3]


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_bad_augment_and_divergence_raise_clear_errors(cls, data):
    X, _, Y = data
    with pytest.raises(ValueError, match="'augment' parameter"):
        cls(max_epochs=1, augment="heavy", **FAST).fit(X, Y)

    with pytest.raises(FloatingPointError, match=r"epoch 1:.*'loss'"):
        cls(NaNEncoder, max_epochs=1, batch_size=16, random_state=0).fit(X, Y)


def _checked_estimators():
    for cls in ESTIMATORS:
        yield cls(max_epochs=5, batch_size=32, module__hidden_sizes=(16,), lr=0.05,
                  random_state=0)


@parametrize_with_checks(list(_checked_estimators()),
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_common_checks(estimator, check):
    check(estimator)

"""The collapse guard: a warning when a class vanishes from a trusted split,
and the opt-in class-aware division that keeps every class in it."""

import warnings

import numpy as np
import pytest

from sklearn_npll import CoRegClassifier
from sklearn_npll._methods.division import class_trust_probabilities, trust_probabilities

FAST = dict(max_epochs=4, warmup_epochs=2, start_contrastive=0, batch_size=16,
            queue_size=64, proj_dim=8, module__hidden_sizes=(16,), random_state=0)


def hidden_class_data(seed=0):
    """Class 2's five samples are near-copies of class-0 samples: the network
    predicts class 0 for them, their loss on their own set {2} is high, and
    the global mixture distrusts all of them."""
    rng = np.random.RandomState(seed)
    centers = rng.normal(0, 3, (2, 5))
    X = np.concatenate([rng.normal(c, 1.0, (30, 5)) for c in centers])
    X = np.r_[X, X[:5] + rng.normal(0, 0.01, (5, 5))].astype(np.float32)
    y = np.r_[np.zeros(30, int), np.ones(30, int), np.full(5, 2)]
    return X, np.eye(3)[y], y


def test_warns_when_a_class_vanishes_from_a_trusted_split():
    X, Y, y = hidden_class_data()
    with pytest.warns(RuntimeWarning, match=r"no sample of class\(es\) 2\b.*class_aware"):
        clf = CoRegClassifier(**FAST).fit(X, Y)
    h = clf.history_
    assert np.isnan(h[0, "missing_classes_a"])            # warm-up: no division
    assert max(h[-1, "missing_classes_a"], h[-1, "missing_classes_b"]) >= 1


def test_class_aware_division_keeps_every_class_trusted():
    X, Y, y = hidden_class_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        clf = CoRegClassifier(class_aware_division=True, **FAST).fit(X, Y)
    for epoch in range(FAST["warmup_epochs"], FAST["max_epochs"]):
        assert clf.history_[epoch, "missing_classes_a"] == 0
        assert clf.history_[epoch, "missing_classes_b"] == 0
    assert (clf.trust_[:, y == 2] > 0.5).any(axis=1).all()


def test_class_trust_is_one_mixture_per_class():
    rng = np.random.RandomState(0)
    losses = np.r_[rng.uniform(0, 0.2, 30), rng.uniform(0.6, 0.7, 10), rng.uniform(0.9, 1, 8),
                   [0.5]]
    labels = np.r_[np.zeros(30, int), np.ones(18, int), [2]]
    w = class_trust_probabilities(losses, labels, random_state=0)
    np.testing.assert_allclose(w[:30], trust_probabilities(losses[:30], random_state=0))
    np.testing.assert_allclose(w[30:48], trust_probabilities(losses[30:48], random_state=0))
    assert w[48] == 1.0                                   # a class of one sample
    # class 1's lower losses are trusted within their class, not globally
    assert (w[30:40] > 0.5).all() and (w[40:48] < 0.5).all()
    assert (trust_probabilities(losses, random_state=0)[30:40] < 0.5).all()

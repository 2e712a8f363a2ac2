"""Verified labels: samples whose label a person checked are singleton sets,
trusted by both networks in every division, never in the unlabeled split."""

import numpy as np
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_npll import CoRegClassifier
from sklearn_npll._methods.coreg import CoRegTrainer

FAST = dict(max_epochs=4, warmup_epochs=2, start_contrastive=0, batch_size=16,
            queue_size=64, proj_dim=8, module__hidden_sizes=(16,), random_state=0)


class SplitRecordingTrainer(CoRegTrainer):
    def divide(self, *args):
        out = super().divide(*args)
        self.estimator.splits_.append((out.trusted, out.unlabeled, out.trust.cpu().numpy()))
        return out


class SplitRecorder(CoRegClassifier):
    """Keeps the trusted and unlabeled splits of every division."""

    trainer_class = SplitRecordingTrainer


def data(seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(0, 3, (3, 5))
    X = np.concatenate([rng.normal(c, 1.0, (20, 5)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(3), 20)
    Y = np.eye(3)[y]
    Y[rng.rand(60) < 0.4] = 1                   # many ambiguous sets
    # six samples whose set is their (wrong-looking) class: a point of class
    # 0 labelled 2, etc.; the network disagrees with these labels, so an
    # unverified division distrusts them
    odd = np.array([0, 1, 20, 21, 40, 41])
    Y[odd] = np.eye(3)[(y[odd] + 2) % 3]
    verified = np.zeros(60, bool)
    verified[odd] = True
    return X, y, Y, verified, odd


def test_verified_samples_are_trusted_by_both_networks_in_every_division():
    X, _, Y, verified, odd = data()
    plain = SplitRecorder(**FAST)
    plain.splits_ = []
    plain.fit(X, Y)
    # without the mark, the division sends some of these samples to U
    assert any(np.isin(odd, U).any() for _, U, _ in plain.splits_)

    clf = SplitRecorder(**FAST)
    clf.splits_ = []
    clf.fit(X, Y, verified=verified)
    assert len(clf.splits_) == 2 * (FAST["max_epochs"] - FAST["warmup_epochs"])
    for P, U, w in clf.splits_:
        assert np.isin(odd, P).all() and not np.isin(odd, U).any()
        np.testing.assert_array_equal(w[odd], 1.0)
        assert (w[~verified] < 1).any()          # the others still go through the mixture
    np.testing.assert_array_equal(clf.trust_[:, odd], 1.0)
    # their disambiguated label is their verified label
    np.testing.assert_allclose(clf.label_distribution_[odd], Y[odd], atol=1e-6)


def test_mixture_is_fitted_without_the_verified_samples(monkeypatch):
    import sklearn_npll._methods.coreg as coreg_module

    sizes = []
    original = coreg_module.trust_probabilities

    def spy(losses, **kwargs):
        sizes.append(len(losses))
        return original(losses, **kwargs)

    monkeypatch.setattr(coreg_module, "trust_probabilities", spy)
    X, _, Y, verified, _ = data()
    CoRegClassifier(**FAST).fit(X, Y, verified=verified)
    assert sizes == [60 - verified.sum()] * 4


def test_verified_through_a_pipeline():
    X, _, Y, verified, odd = data()
    pipe = Pipeline([("scale", StandardScaler()), ("coreg", CoRegClassifier(**FAST))])
    pipe.fit(X, Y, coreg__verified=verified)
    np.testing.assert_array_equal(pipe[-1].trust_[:, odd], 1.0)


@pytest.mark.parametrize("bad, match", [
    (np.ones(59, bool), "shape"),
    (np.arange(60), "boolean mask"),
    (np.ones(60, bool), "single candidate"),
])
def test_bad_verified_masks_raise(bad, match):
    X, _, Y, _, _ = data()
    with pytest.raises(ValueError, match=match):
        CoRegClassifier(**FAST).fit(X, Y, verified=bad)

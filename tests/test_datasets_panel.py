"""The annotator panel: instance-dependent noisy candidate sets from weak
scikit-learn annotators, and the documented noise regimes on digits."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_npll import (AnnotatorPanel, candidate_stats, make_annotator_partial_labels,
                          make_partial_labels, votes_to_candidates)

# The settings documented in make_annotator_partial_labels, with the CLIP
# ranges of the paper (mean set size 1.4-3.3, noise rate 5-60%).
LOW_NOISE = dict(n_annotators=3, n_shots=5, feature_fraction=0.5)
HIGH_NOISE = dict(n_annotators=3, n_shots=2, feature_fraction=0.08)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    # the annotators learn from a pool that is disjoint from the training set
    X, X_pool, y, y_pool = train_test_split(X, y, test_size=0.3, stratify=y,
                                            random_state=0)
    return X, y, X_pool, y_pool


@pytest.fixture(scope="module")
def hardness(digits):
    """A reference classifier's out-of-fold confidence in the true label."""
    X, y, _, _ = digits
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=500))
    proba = cross_val_predict(ref, X, y, cv=5, method="predict_proba")
    return proba[np.arange(len(y)), y]


def test_sets_are_the_union_of_the_votes_and_never_empty(digits):
    X, y, X_pool, y_pool = digits
    panel = AnnotatorPanel(n_annotators=5, n_shots=3, top_k=2, random_state=0)
    panel.fit(X_pool, y_pool)
    votes = panel.votes(X)
    assert votes.shape == (len(X), 10)
    # each annotator's top-k votes are distinct classes
    per_annotator = votes.reshape(len(X), 5, 2)
    assert (per_annotator[:, :, 0] != per_annotator[:, :, 1]).all()
    Y = panel.candidates(X)
    assert Y.dtype == np.uint8 and Y.shape == (len(X), 10)
    assert Y.sum(1).min() >= 1
    expected = np.zeros_like(Y)
    for j in range(votes.shape[1]):
        expected[np.arange(len(X)), np.searchsorted(panel.classes_, votes[:, j])] = 1
    np.testing.assert_array_equal(Y, expected)
    np.testing.assert_array_equal(Y, votes_to_candidates(votes, classes=panel.classes_)[0])
    # at most top_k * n_annotators candidates, and top_k widens the sets
    assert Y.sum(1).max() <= 10
    narrow = clone(panel).set_params(top_k=1).fit(X_pool, y_pool).candidates(X)
    assert narrow.sum(1).mean() < Y.sum(1).mean()


def test_fitted_state_shots_views_and_models(digits):
    _, _, X_pool, y_pool = digits
    panel = AnnotatorPanel(n_annotators=6, n_shots=4, feature_fraction=0.25,
                           random_state=0).fit(X_pool, y_pool)
    assert len(panel.estimators_) == 6 and panel.n_features_in_ == 64
    assert [type(e).__name__ for e in panel.estimators_[:5]] == [
        "LogisticRegression", "GaussianNB", "NearestCentroid", "DecisionTreeClassifier",
        "LogisticRegression"]
    for shots, view in zip(panel.shot_indices_, panel.feature_views_):
        assert len(view) == 16 and len(set(view)) == 16
        assert np.bincount(y_pool[shots], minlength=10).tolist() == [4] * 10
    assert len({tuple(v) for v in panel.feature_views_}) == 6
    custom = AnnotatorPanel(n_annotators=3, estimators=[GaussianNB()],
                            random_state=0).fit(X_pool, y_pool)
    assert all(isinstance(e, GaussianNB) for e in custom.estimators_)


def test_same_seed_same_sets_other_seed_differs(digits):
    X, y, X_pool, y_pool = digits
    a, sa, _ = make_annotator_partial_labels(X, y, X_pool, y_pool, random_state=3)
    b, sb, _ = make_annotator_partial_labels(X, y, X_pool, y_pool, random_state=3)
    c, _, _ = make_annotator_partial_labels(X, y, X_pool, y_pool, random_state=4)
    np.testing.assert_array_equal(a, b)
    assert sa == sb
    assert (a != c).any()


def test_stats_and_majority_vote(digits):
    X, y, X_pool, y_pool = digits
    Y, stats, panel = make_annotator_partial_labels(X, y, X_pool, y_pool, random_state=0)
    assert stats == candidate_stats(Y, y, classes=panel.classes_)
    assert {"mean_size", "noise_rate", "coverage", "size_counts"} <= set(stats)
    pred = panel.predict(X)
    # the majority vote is a weak but real classifier, and its vote is a candidate
    assert 0.5 < panel.score(X, y) < 1.0
    assert Y[np.arange(len(X)), np.searchsorted(panel.classes_, pred)].all()


def test_string_labels(digits):
    X, y, X_pool, y_pool = digits
    names = np.array([f"digit {i}" for i in range(10)])
    Y, stats, panel = make_annotator_partial_labels(
        X[:200], names[y[:200]], X_pool, names[y_pool], n_annotators=3, random_state=0)
    assert list(panel.classes_) == sorted(names)
    assert set(panel.predict(X[:20])) <= set(names)
    assert panel.votes(X[:5]).dtype.kind == "U"
    assert 0 <= stats["noise_rate"] <= 1


@pytest.mark.parametrize("setting", [LOW_NOISE, HIGH_NOISE], ids=["low", "high"])
def test_documented_settings_land_in_the_clip_ranges(digits, setting):
    X, y, X_pool, y_pool = digits
    _, stats, _ = make_annotator_partial_labels(X, y, X_pool, y_pool, random_state=0,
                                                **setting)
    assert 1.4 <= stats["mean_size"] <= 3.3, stats
    assert 0.05 <= stats["noise_rate"] <= 0.60, stats


def test_the_two_settings_differ_in_noise(digits):
    X, y, X_pool, y_pool = digits
    low = make_annotator_partial_labels(X, y, X_pool, y_pool, random_state=0, **LOW_NOISE)[1]
    high = make_annotator_partial_labels(X, y, X_pool, y_pool, random_state=0, **HIGH_NOISE)[1]
    assert high["noise_rate"] > 3 * low["noise_rate"]
    assert high["mean_size"] > low["mean_size"]


@pytest.mark.parametrize("setting", [LOW_NOISE, HIGH_NOISE], ids=["low", "high"])
def test_noise_depends_on_the_instance(digits, hardness, setting):
    """Samples a reference classifier finds hard get wrong (and larger) sets
    far more often than easy ones; uniform flipping at the same rates does
    not tell them apart."""
    X, y, X_pool, y_pool = digits
    Y, stats, _ = make_annotator_partial_labels(X, y, X_pool, y_pool, random_state=0,
                                                **setting)
    order = np.argsort(hardness)
    third = len(y) // 3
    hard, easy = order[:third], order[-third:]
    missing = Y[np.arange(len(y)), y] == 0
    sizes = Y.sum(1)
    assert missing[hard].mean() > 1.5 * missing[easy].mean()
    assert missing[hard].mean() - missing[easy].mean() > 0.1
    assert sizes[hard].mean() > sizes[easy].mean()

    q = (stats["mean_size"] - 1) / 9
    uniform = make_partial_labels(y, q, min(1.0, stats["noise_rate"] / (1 - q ** 9)),
                                  random_state=0)
    u_missing = uniform[np.arange(len(y)), y] == 0
    assert abs(u_missing[hard].mean() - u_missing[easy].mean()) < 0.06


def test_invalid_parameters_raise(digits):
    _, _, X_pool, y_pool = digits
    with pytest.raises(ValueError, match="top_k"):
        AnnotatorPanel(top_k=11).fit(X_pool, y_pool)
    with pytest.raises(ValueError, match="feature_fraction"):
        AnnotatorPanel(feature_fraction=0.0).fit(X_pool, y_pool)
    with pytest.raises(ValueError, match="n_shots"):
        AnnotatorPanel(n_shots=0).fit(X_pool, y_pool)
    with pytest.raises(ValueError, match="estimators"):
        AnnotatorPanel(estimators=[]).fit(X_pool, y_pool)
    panel = AnnotatorPanel(n_annotators=2, random_state=0).fit(X_pool, y_pool)
    with pytest.raises(ValueError, match="features"):
        panel.candidates(X_pool[:, :10])


@parametrize_with_checks([AnnotatorPanel(n_annotators=3, random_state=0)])
def test_sklearn_common_checks(estimator, check):
    check(estimator)

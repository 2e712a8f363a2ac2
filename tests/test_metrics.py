"""Tests of the covering rate and its scorer."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from sklearn_npll._data.candidates import check_candidates
from sklearn_npll._data.annotated import AnnotatedImages
from sklearn_npll.metrics import covering_rate, covering_rate_scorer

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def matrices_and_choices(draw):
    n = draw(st.integers(1, 30))
    c = draw(st.integers(2, 7))
    Y = draw(arrays(np.uint8, (n, c), elements=st.integers(0, 1)))
    Y[np.arange(n), draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))] = 1
    full = np.flatnonzero(Y.sum(axis=1) == c)
    Y[full, 0] = 0  # keep one non-candidate per row
    u = draw(arrays(np.float64, (n, c), elements=st.floats(0, 1, exclude_max=True)))
    return Y, u


def _pick(Y, u, member):
    """For each row, one column chosen at random among (non-)candidates."""
    keys = np.where(Y == member, u, -1.0)
    return keys.argmax(axis=1)


@SETTINGS
@given(matrices_and_choices())
def test_covering_rate_is_one_when_every_prediction_is_a_candidate(data):
    Y, u = data
    assert covering_rate(Y, _pick(Y, u, 1)) == 1.0


@SETTINGS
@given(matrices_and_choices())
def test_covering_rate_is_zero_when_no_prediction_is_a_candidate(data):
    Y, u = data
    assert covering_rate(Y, _pick(Y, u, 0)) == 0.0


@SETTINGS
@given(matrices_and_choices(), st.data())
def test_covering_rate_is_the_fraction_covered_with_names(data, draw):
    Y, u = data
    n, c = Y.shape
    pred = draw.draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    names = np.array([f"c{j}" for j in range(c)])[::-1]  # not sorted
    expected = Y[np.arange(n), pred].mean()
    assert covering_rate(Y, pred) == pytest.approx(expected)
    assert covering_rate(Y, names[pred], classes=names) == pytest.approx(expected)


def test_covering_rate_accepts_sets():
    Y = [{"cat", "dog"}, {"emu"}]
    assert covering_rate(Y, ["dog", "cat"], classes=["cat", "dog", "emu"]) == 0.5


def test_unknown_predicted_labels_are_named():
    with pytest.raises(ValueError, match=r"not in classes: \['fox'\]"):
        covering_rate([[1, 0], [0, 1]], ["cat", "fox"], classes=["cat", "dog"])


def test_without_classes_predictions_must_be_column_indices():
    with pytest.raises(ValueError, match="integer column indices"):
        covering_rate([[1, 0], [0, 1]], ["cat", "dog"])
    with pytest.raises(ValueError, match=r"outside 0\.\.1: \[2\]"):
        covering_rate([[1, 0], [0, 1]], [0, 2])


def test_length_mismatch():
    with pytest.raises(ValueError, match="2 rows but X has 3 samples"):
        covering_rate([[1, 0], [0, 1]], [0, 1, 1])


# ---------------------------------------------------------------- scorer


class ConstantCandidate(ClassifierMixin, BaseEstimator):
    """Predicts the same class (by position) for every sample."""

    def __init__(self, choice=0):
        self.choice = choice

    def fit(self, X, y=None):
        if isinstance(X, AnnotatedImages):
            _, self.classes_ = check_candidates(X.candidates, classes=X.classes)
        else:
            _, self.classes_ = check_candidates(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[self.choice])


def _candidates(n=30):
    # column 1 always a candidate, column 0 every other row, column 2 never
    Y = np.zeros((n, 3), dtype=np.uint8)
    Y[:, 1] = 1
    Y[::2, 0] = 1
    return Y


def test_scorer_on_dummy_classifier():
    X = np.zeros((4, 2))
    clf = DummyClassifier(strategy="most_frequent").fit(X, ["a", "a", "b", "c"])
    Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])
    assert covering_rate_scorer(clf, X, Y) == 0.5
    assert covering_rate_scorer(clf, X, [{"a"}, {"b"}, {"a", "c"}, {"c"}]) == 0.5


def test_grid_search_with_candidate_matrix():
    Y = _candidates()
    X = np.zeros((Y.shape[0], 2))
    search = GridSearchCV(ConstantCandidate(), {"choice": [0, 1, 2]},
                          scoring=covering_rate_scorer, cv=KFold(3))
    search.fit(X, Y)
    assert search.best_params_ == {"choice": 1}
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], [0.5, 1.0, 0.0])


def test_grid_search_with_annotated_images_and_no_y():
    Y = _candidates()
    data = AnnotatedImages(np.zeros((Y.shape[0], 4, 4), dtype=np.uint8), Y,
                           ["cat", "dog", "emu"])
    search = GridSearchCV(ConstantCandidate(), {"choice": [2, 0, 1]},
                          scoring=covering_rate_scorer, cv=KFold(3))
    search.fit(data)
    assert search.best_params_ == {"choice": 1}
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], [0.0, 0.5, 1.0])


def test_annotated_images_columns_matched_by_name():
    Y = _candidates(6)
    data = AnnotatedImages(np.zeros((6, 4, 4), dtype=np.uint8), Y, ["cat", "dog", "emu"])
    clf = ConstantCandidate(choice=0).fit(data)
    # an estimator whose classes_ are in another order still scores by name
    clf.classes_ = np.array(["emu", "dog", "cat"])
    clf.choice = 1  # predicts "dog", always a candidate
    assert covering_rate_scorer(clf, data) == 1.0
    # "cat" is a candidate in rows 0, 2, 4: folds [0, 1, 2] and [3, 4, 5]
    scores = cross_val_score(ConstantCandidate(0), data, scoring=covering_rate_scorer,
                             cv=KFold(2))
    np.testing.assert_allclose(scores, [2 / 3, 1 / 3])


def test_scorer_errors():
    clf = ConstantCandidate().fit(np.zeros((2, 1)), np.eye(3)[:2])
    with pytest.raises(ValueError, match="2 columns but the model knows 3 classes"):
        covering_rate_scorer(clf, np.zeros((2, 1)), np.eye(2))
    with pytest.raises(ValueError, match="No candidate sets"):
        covering_rate_scorer(clf, np.zeros((2, 1)))

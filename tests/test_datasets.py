"""Tests of the synthetic partial-label generator, vote merging and statistics."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sklearn_npll.datasets import candidate_stats, make_partial_labels, votes_to_candidates

SETTINGS = settings(max_examples=30, deadline=None)

rates = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def labels(draw, max_n=60, max_classes=8):
    c = draw(st.integers(1, max_classes))
    n = draw(st.integers(1, max_n))
    y = draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    return y, c


# ------------------------------------------------------ make_partial_labels


@SETTINGS
@given(labels(), rates, rates, st.integers(0, 2**32 - 1))
def test_generated_sets_are_never_empty_and_binary(yc, q, eta, seed):
    y, c = yc
    Y = make_partial_labels(y, q, eta, n_classes=c, random_state=seed)
    assert Y.shape == (y.size, c)
    assert Y.dtype == np.uint8
    assert set(np.unique(Y)) <= {0, 1}
    assert Y.sum(axis=1).min() >= 1


@SETTINGS
@given(labels(), rates, rates, st.integers(0, 2**32 - 1))
def test_same_random_state_gives_same_matrix(yc, q, eta, seed):
    y, c = yc
    Y1 = make_partial_labels(y, q, eta, n_classes=c, random_state=seed)
    Y2 = make_partial_labels(y, q, eta, n_classes=c, random_state=seed)
    Y3 = make_partial_labels(y, q, eta, n_classes=c,
                             random_state=np.random.RandomState(seed))
    Y4 = make_partial_labels(y, q, eta, n_classes=c,
                             random_state=np.random.RandomState(seed))
    np.testing.assert_array_equal(Y1, Y2)
    np.testing.assert_array_equal(Y3, Y4)


@SETTINGS
@given(labels(), rates, st.integers(0, 2**32 - 1))
def test_without_noise_the_true_label_is_always_a_candidate(yc, q, seed):
    y, c = yc
    Y = make_partial_labels(y, q, 0.0, n_classes=c, random_state=seed)
    assert np.all(Y[np.arange(y.size), y] == 1)


@SETTINGS
@given(labels(), rates, st.floats(0.01, 1.0), st.integers(0, 2**32 - 1))
def test_swap_protocol(yc, q, eta, seed):
    """Noise swaps the true label for exactly one class outside the set."""
    y, c = yc
    rows = np.arange(y.size)
    clean = make_partial_labels(y, q, 0.0, n_classes=c, random_state=seed)
    noisy = make_partial_labels(y, q, eta, n_classes=c, random_state=seed)
    changed = np.flatnonzero(np.any(clean != noisy, axis=1))
    # the set keeps its size
    np.testing.assert_array_equal(clean.sum(axis=1), noisy.sum(axis=1))
    # a changed row lost its true label and gained exactly one new class
    assert np.all(noisy[changed, y[changed]] == 0)
    gained = (noisy[changed] == 1) & (clean[changed] == 0)
    lost = (noisy[changed] == 0) & (clean[changed] == 1)
    assert np.all(gained.sum(axis=1) == 1)
    assert np.all(lost.sum(axis=1) == 1)
    # an unchanged row still holds its true label
    unchanged = np.setdiff1d(rows, changed)
    assert np.all(noisy[unchanged, y[unchanged]] == 1)
    # a full row is never changed
    full = clean.sum(axis=1) == c
    assert not np.any(full[changed])


def test_full_rows_are_left_alone():
    y = np.arange(5)
    Y = make_partial_labels(y, 1.0, 1.0, n_classes=5, random_state=0)
    np.testing.assert_array_equal(Y, np.ones((5, 5)))


def test_noise_one_and_no_partial_rate_moves_every_label():
    y = np.zeros(50, dtype=int)
    Y = make_partial_labels(y, 0.0, 1.0, n_classes=4, random_state=0)
    assert np.all(Y.sum(axis=1) == 1)
    assert np.all(Y[:, 0] == 0)


@pytest.mark.parametrize(
    "n, C, q, eta",
    [(20000, 10, 0.3, 0.2), (5000, 100, 0.01, 0.3), (20000, 2, 0.5, 0.1), (10000, 5, 0.0, 0.5)],
)
def test_rates_match_the_protocol(n, C, q, eta):
    """Mean set size -> 1 + q (C - 1); noise rate -> eta (1 - q ** (C - 1))."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, C, size=n)
    Y = make_partial_labels(y, q, eta, n_classes=C, random_state=2)
    sizes = Y.sum(axis=1)
    # set size = 1 + Binomial(C - 1, q), untouched by the swap
    expected_size = 1 + q * (C - 1)
    se_size = math.sqrt((C - 1) * q * (1 - q) / n)
    assert abs(sizes.mean() - expected_size) <= 5 * se_size + 1e-12
    # noise indicator: Bernoulli(eta * P(row not full))
    p_noise = eta * (1 - q ** (C - 1))
    se_noise = math.sqrt(p_noise * (1 - p_noise) / n)
    noise = 1 - Y[np.arange(n), y].mean()
    assert abs(noise - p_noise) <= 5 * se_noise + 1e-12
    # the realised statistics are what candidate_stats reports
    stats = candidate_stats(Y, y_true=y, classes=np.arange(C))
    assert stats["mean_size"] == pytest.approx(sizes.mean())
    assert stats["noise_rate"] == pytest.approx(noise)


def test_swapped_in_class_is_uniform_among_the_others():
    n, C = 8000, 5
    y = np.zeros(n, dtype=int)
    Y = make_partial_labels(y, 0.0, 1.0, n_classes=C, random_state=3)
    counts = Y[:, 1:].sum(axis=0)
    p = 1 / (C - 1)
    se = math.sqrt(n * p * (1 - p))
    assert np.all(np.abs(counts - n * p) <= 5 * se)


def test_arbitrary_labels_map_through_unique():
    y = np.array(["dog", "cat", "dog", "emu"])
    Y = make_partial_labels(y, 0.0, 0.0, random_state=0)
    # columns follow np.unique(y) = ['cat', 'dog', 'emu']
    np.testing.assert_array_equal(Y, [[0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_n_classes_keeps_absent_classes():
    Y = make_partial_labels([0, 2], 0.0, 0.0, n_classes=4, random_state=0)
    np.testing.assert_array_equal(Y, [[1, 0, 0, 0], [0, 0, 1, 0]])
    # without n_classes the absent classes have no column
    assert make_partial_labels([0, 2], 0.0, 0.0, random_state=0).shape == (2, 2)


def test_different_seeds_differ():
    y = np.arange(200) % 10
    Y1 = make_partial_labels(y, 0.3, 0.2, random_state=0)
    Y2 = make_partial_labels(y, 0.3, 0.2, random_state=1)
    assert not np.array_equal(Y1, Y2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(y=[0, 1], partial_rate=1.5, noise_rate=0.1), "partial_rate"),
        (dict(y=[0, 1], partial_rate=0.1, noise_rate=-0.1), "noise_rate"),
        (dict(y=[0, 5], partial_rate=0.1, noise_rate=0.1, n_classes=3), "index 1: 5"),
        (dict(y=[[0, 1]], partial_rate=0.1, noise_rate=0.1), "1-D"),
        (dict(y=[], partial_rate=0.1, noise_rate=0.1), "empty"),
        (dict(y=["a"], partial_rate=0.1, noise_rate=0.1, n_classes=2), "integer"),
    ],
)
def test_make_partial_labels_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_partial_labels(**kwargs)


# ------------------------------------------------------ votes_to_candidates


@st.composite
def int_votes(draw):
    n = draw(st.integers(1, 25))
    m = draw(st.integers(1, 6))
    c = draw(st.integers(1, 6))
    V = draw(arrays(np.int64, (n, m), elements=st.integers(-1, c - 1)))
    first = draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    V[:, 0] = first  # every sample keeps at least one vote
    return V


@SETTINGS
@given(int_votes(), st.randoms(use_true_random=False))
def test_votes_union_and_annotator_order_invariance(V, rnd):
    Y, classes = votes_to_candidates(V)
    perm = list(range(V.shape[1]))
    rnd.shuffle(perm)
    Y_perm, classes_perm = votes_to_candidates(V[:, perm])
    np.testing.assert_array_equal(Y, Y_perm)
    np.testing.assert_array_equal(classes, classes_perm)
    for i, row in enumerate(V):
        expected = {int(v) for v in row if v != -1}
        assert set(classes[np.flatnonzero(Y[i])].tolist()) == expected


def test_string_votes_with_missing_entries():
    votes = [["cat", None, "dog"], ["", "dog", "dog"], ["bird", "", None]]
    Y, classes = votes_to_candidates(votes)
    assert classes.tolist() == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(Y, [[0, 1, 1], [0, 0, 1], [1, 0, 0]])


def test_float_votes_with_nan_are_integer_labels():
    Y, classes = votes_to_candidates(np.array([[0.0, np.nan], [np.nan, 2.0]]))
    np.testing.assert_array_equal(classes, [0, 2])
    assert classes.dtype.kind == "i"
    np.testing.assert_array_equal(Y, [[1, 0], [0, 1]])


def test_integer_votes_index_named_classes():
    Y, classes = votes_to_candidates([[0, -1], [2, 1]], classes=["cat", "dog", "emu"])
    assert classes.tolist() == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(Y, [[1, 0, 0], [0, 1, 1]])


def test_votes_with_given_classes_keep_unvoted_columns():
    Y, classes = votes_to_candidates([["b"], ["b"]], classes=["a", "b", "c"])
    np.testing.assert_array_equal(Y, [[0, 1, 0], [0, 1, 0]])


def test_rows_without_votes_are_named():
    votes = [[1, -1], [-1, -1], [0, 0], [-1, -1]]
    with pytest.raises(ValueError, match=r"2 sample\(s\) have no vote at all, at rows \[1, 3\]"):
        votes_to_candidates(votes)
    with pytest.raises(ValueError, match=r"rows \[0\]"):
        votes_to_candidates([[None, ""], ["a", None]])


def test_unknown_votes_are_named():
    with pytest.raises(ValueError, match=r"not in classes: \['fox'\]"):
        votes_to_candidates([["cat", "fox"]], classes=["cat", "dog"])
    with pytest.raises(ValueError, match=r"column indices .*\[7\]"):
        votes_to_candidates([[0, 7]], classes=["cat", "dog"])


# ------------------------------------------------------ candidate_stats


def test_candidate_stats_known_values():
    Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]])
    stats = candidate_stats(Y, y_true=[0, 0, 1, 2])
    assert stats["n_samples"] == 4 and stats["n_classes"] == 3
    assert stats["mean_size"] == pytest.approx(7 / 4)
    assert stats["size_counts"] == {1: 2, 2: 1, 3: 1}
    assert stats["coverage"] == pytest.approx(0.75)
    assert stats["noise_rate"] == pytest.approx(0.25)


def test_candidate_stats_without_truth_has_no_coverage():
    stats = candidate_stats([{"a", "b"}, {"b"}])
    assert "coverage" not in stats and "noise_rate" not in stats
    assert stats["size_counts"] == {1: 1, 2: 1}


def test_candidate_stats_with_class_names():
    stats = candidate_stats([[1, 0], [1, 1]], y_true=["dog", "cat"], classes=["cat", "dog"])
    assert stats["coverage"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"not in classes: \['emu'\]"):
        candidate_stats([[1, 0], [1, 1]], y_true=["emu", "cat"], classes=["cat", "dog"])
    with pytest.raises(ValueError, match="one label per candidate set"):
        candidate_stats([[1, 0], [1, 1]], y_true=[0])


@SETTINGS
@given(labels(), rates, rates, st.integers(0, 2**16))
def test_candidate_stats_properties(yc, q, eta, seed):
    y, c = yc
    Y = make_partial_labels(y, q, eta, n_classes=c, random_state=seed)
    stats = candidate_stats(Y, y_true=y)
    assert sum(stats["size_counts"].values()) == y.size
    assert stats["mean_size"] == pytest.approx(
        sum(k * v for k, v in stats["size_counts"].items()) / y.size
    )
    assert stats["coverage"] + stats["noise_rate"] == pytest.approx(1.0)
    assert stats["coverage"] == pytest.approx(Y[np.arange(y.size), y].mean())
    # plain Python values
    assert type(stats["mean_size"]) is float and type(stats["coverage"]) is float
    assert all(type(k) is int and type(v) is int for k, v in stats["size_counts"].items())
    if eta == 0:
        assert stats["coverage"] == 1.0

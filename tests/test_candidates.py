"""Tests of candidate-set validation and conversion."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sklearn_npll._data.candidates import check_candidates

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def candidate_matrices(draw, min_rows=1, max_rows=30, max_cols=8):
    n = draw(st.integers(min_rows, max_rows))
    c = draw(st.integers(1, max_cols))
    Y = draw(arrays(np.uint8, (n, c), elements=st.integers(0, 1)))
    # make every row non-empty at a random column
    cols = draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    Y[np.arange(n), cols] = 1
    return Y


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("dtype", [bool, np.int64, np.float32, np.uint8])
def test_matrix_of_any_numeric_dtype_becomes_uint8(dtype):
    Y = np.array([[1, 0, 1], [0, 1, 0]]).astype(dtype)
    Y01, classes = check_candidates(Y)
    assert Y01.dtype == np.uint8
    np.testing.assert_array_equal(Y01, [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(classes, [0, 1, 2])


def test_matrix_with_class_names():
    Y01, classes = check_candidates([[1, 0], [1, 1]], classes=["cat", "dog"])
    assert classes.tolist() == ["cat", "dog"]
    np.testing.assert_array_equal(Y01, [[1, 0], [1, 1]])


def test_torch_tensor_matrix():
    Y01, _ = check_candidates(torch.tensor([[True, False], [False, True]]))
    np.testing.assert_array_equal(Y01, [[1, 0], [0, 1]])


def test_one_dimensional_labels_are_singletons():
    Y01, classes = check_candidates(np.array(["b", "a", "c", "a"]))
    assert classes.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(Y01, [[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0]])


def test_labels_follow_given_class_order():
    Y01, classes = check_candidates(["dog", "cat"], classes=["dog", "bird", "cat"])
    assert classes.tolist() == ["dog", "bird", "cat"]
    np.testing.assert_array_equal(Y01, [[1, 0, 0], [0, 0, 1]])


def test_list_of_sets_of_names():
    Y01, classes = check_candidates([{"dog"}, {"cat", "dog"}, ("bird",)])
    assert classes.tolist() == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(Y01, [[0, 0, 1], [0, 1, 1], [1, 0, 0]])


def test_sets_of_integer_labels_are_names_not_a_matrix():
    Y01, classes = check_candidates([{0, 2}, {5}])
    np.testing.assert_array_equal(classes, [0, 2, 5])
    np.testing.assert_array_equal(Y01, [[1, 1, 0], [0, 0, 1]])


def test_ragged_lists_of_names_with_given_classes():
    Y01, classes = check_candidates([["b"], ["a", "c"]], classes=["c", "b", "a"])
    assert classes.tolist() == ["c", "b", "a"]
    np.testing.assert_array_equal(Y01, [[0, 1, 0], [1, 0, 1]])


# ---------------------------------------------------------------- errors


def test_rows_without_candidate_are_listed():
    Y = np.ones((12, 3))
    Y[[2, 5, 6, 7, 8, 9, 11]] = 0
    with pytest.raises(ValueError, match="7 sample") as info:
        check_candidates(Y)
    msg = str(info.value)
    assert "[2, 5, 6, 7, 8, ..." in msg
    assert "11" not in msg.split("...")[0]


def test_empty_set_in_list_of_sets_is_rejected():
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        check_candidates([{"a"}, set(), {"b"}])


def test_non_binary_entry_is_located():
    Y = np.ones((3, 4))
    Y[2, 1] = 0.5
    with pytest.raises(ValueError, match=r"0\.5 at row 2, column 1"):
        check_candidates(Y)


def test_nan_entry_is_non_binary():
    Y = np.ones((2, 2))
    Y[1, 0] = np.nan
    with pytest.raises(ValueError, match="row 1, column 0"):
        check_candidates(Y)


def test_row_count_must_match_n_samples():
    with pytest.raises(ValueError, match="3 rows but X has 5 samples"):
        check_candidates(np.eye(3), n_samples=5)


def test_names_not_in_classes_are_listed():
    with pytest.raises(ValueError, match=r"not in classes: \['fox'\]"):
        check_candidates([{"cat"}, {"fox", "dog"}], classes=["cat", "dog"])
    with pytest.raises(ValueError, match=r"not in classes: \['emu'\]"):
        check_candidates(["cat", "emu"], classes=["cat", "dog"])


def test_classes_must_match_number_of_columns():
    with pytest.raises(ValueError, match="3 columns but 2 classes"):
        check_candidates(np.eye(3), classes=["a", "b"])


def test_duplicate_classes_rejected():
    with pytest.raises(ValueError, match="duplicates"):
        check_candidates(np.eye(2), classes=["a", "a"])


@pytest.mark.parametrize("Y", [np.zeros((2, 2, 2)), np.zeros((0, 3)), np.zeros(0)])
def test_bad_shapes_rejected(Y):
    with pytest.raises(ValueError):
        check_candidates(Y)


# ---------------------------------------------------------------- properties


@SETTINGS
@given(candidate_matrices())
def test_valid_matrix_round_trips(Y):
    Y01, classes = check_candidates(Y, n_samples=Y.shape[0])
    np.testing.assert_array_equal(Y01, Y)
    np.testing.assert_array_equal(classes, np.arange(Y.shape[1]))


@SETTINGS
@given(candidate_matrices(), st.randoms(use_true_random=False))
def test_sets_and_matrix_agree(Y, rnd):
    names = np.array([f"class{j}" for j in range(Y.shape[1])])
    perm = list(range(Y.shape[1]))
    rnd.shuffle(perm)
    classes = names[perm]  # an arbitrary column order
    sets = [{names[j] for j in np.flatnonzero(row)} for row in Y]
    Y01, out_classes = check_candidates(sets, classes=classes)
    np.testing.assert_array_equal(out_classes, classes)
    for i, s in enumerate(sets):
        assert set(classes[np.flatnonzero(Y01[i])]) == s


@SETTINGS
@given(candidate_matrices(min_rows=2), st.data())
def test_every_empty_row_is_reported(Y, data):
    n = Y.shape[0]
    empty = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
    Y = Y.copy()
    Y[empty] = 0
    with pytest.raises(ValueError) as info:
        check_candidates(Y)
    msg = str(info.value)
    assert msg.startswith(f"{len(empty)} sample(s)")
    inner = re.search(r"rows \[([^\]]*)\]", msg).group(1).split("...")[0]
    listed = [int(v) for v in re.findall(r"\d+", inner)]
    assert listed == empty[: len(listed)]
    assert len(listed) == min(5, len(empty))

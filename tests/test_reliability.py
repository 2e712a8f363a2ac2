"""Inputs a careless or unlucky user passes, divergence and interruption:
every case either works or fails loudly with a message naming the culprit."""

import re
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
every_third = np.arange(0, len(y), 3)  # sets of two classes, not of all three
Y[every_third, (y[every_third] + 1) % 3] = 1


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
    with pytest.raises(ValueError, match=r"columns \['owl'\] name no class"):
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
    with pytest.raises(FloatingPointError, match=r"epoch 2 \(division, network A\)"):
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


# ------------------------------------------------------------ the table
def _fit(X_, y_, cls=CCClassifier, **params):
    def action():
        clf = cls(**{"max_epochs": 1, **FAST, **params}).fit(X_, y_)
        return f"fits, classes_ {clf.classes_.tolist()}"
    return action


def _predict(X_):
    fitted = CCClassifier(max_epochs=1, **FAST).fit(X, Y)
    return lambda: f"predicts {fitted.predict(X_).shape}"


def _sets(names):
    return [set(names[i % len(names)]) for i in range(len(y))]


def _labels_with(rows, value, dtype=None):
    labels = y.astype(dtype or y.dtype)
    labels[rows] = value
    return labels


INPUT_CASES = [
    ("0/1 candidate matrix", _fit(X, Y)),
    ("1-D integer labels", _fit(X, y)),
    ("1-D string labels", _fit(X, np.array(["cat", "dog", "fox"])[y])),
    ("list of sets of names", _fit(X, _sets([{"cat"}, {"cat", "dog"}, {"fox"}]))),
    ("boolean candidate matrix", _fit(X, Y.astype(bool))),
    ("scipy sparse candidate matrix (csr)", _fit(X, sp.csr_matrix(Y))),
    ("DataFrame candidate matrix with named columns",
     _fit(X, pd.DataFrame(Y, columns=["cat", "dog", "fox"]))),
    ("pandas Series of labels", _fit(X, pd.Series(y))),
    ("labels as a column vector (n, 1)", _fit(X, y[:, None] + 1)),
    ("torch tensor candidate matrix", _fit(X, __import__("torch").as_tensor(Y))),
    ("X as a list of lists", _fit(X.tolist(), y)),
    ("X as a float64 DataFrame", _fit(pd.DataFrame(X.astype(np.float64)), y)),
    ("labels {-1, 1}", _fit(X[y < 2], np.where(y[y < 2] == 0, -1, 1))),
    ("labels with -1 next to 0 (semi-supervised coding)", _fit(X, _labels_with([0, 5], -1))),
    ("a single class (1-D labels)", _fit(X, np.zeros(len(y), int))),
    ("a single class (list of sets)", _fit(X, [{"cat"}] * len(y))),
    ("one-column 0/1 candidate matrix", _fit(X, Y[:, :1])),
    ("a class that no candidate set holds", _fit(X, np.c_[Y, np.zeros(len(Y), np.uint8)])),
    ("candidate matrix with empty rows", _fit(X, np.where(np.arange(len(Y))[:, None] < 2, 0, Y))),
    ("list of sets with an empty set", _fit(X, [set()] + _sets([{"cat"}, {"dog"}])[1:])),
    ("candidate matrix with a 2", _fit(X, np.where(Y == 1, 2, 0))),
    ("candidate matrix with 0 columns", _fit(X, np.zeros((len(y), 0)))),
    ("sets mixing names and numbers", _fit(X, _sets([{"cat", 1}, {"dog"}]))),
    ("labels with NaN", _fit(X, _labels_with([3], np.nan, float))),
    ("continuous float labels", _fit(X, np.linspace(0, 1, len(y)))),
    ("y of another length", _fit(X, y[:-1])),
    ("y missing (None)", _fit(X, None)),
    ("X empty list", _fit([], [])),
    ("X of one sample", _fit(X[:1], [0])),
    ("X 1-D", _fit(X[:, 0], y)),
    ("X with NaN", _fit(np.where(np.arange(len(X))[:, None] == 4, np.nan, X), y)),
    ("X with inf", _fit(np.where(np.arange(len(X))[:, None] == 4, np.inf, X), y)),
    ("X of strings that are not files", _fit(["a.png", "b.png"], [0, 1])),
    ("X of complex numbers", _fit(X.astype(np.complex64), y)),
    ("predict: X with another number of features", _predict(X[:, :3])),
    ("predict: X with NaN", _predict(np.full((2, 5), np.nan, np.float32))),
    ("predict: X empty list", _predict([])),
]


def _training_cases():
    def warmup_only():
        clf = CoRegClassifier(max_epochs=2, **COREG_FAST).fit(X, Y)
        return f"fits, trust_ {clf.trust_}"

    def nan_weights_at_division():
        clf = CoRegClassifier(max_epochs=3, warmup_epochs=1,
                              callbacks=[("poison", PoisonAfterEpoch(1))], **COREG_FAST)
        with pytest.raises(FloatingPointError):
            clf.fit(X, Y)
        clf.predict(X)

    def nan_loss(cls):
        def action():
            clf = cls(NaNEncoder, max_epochs=1, batch_size=16, random_state=0)
            with pytest.raises(FloatingPointError):
                clf.fit(X, Y)
            clf.predict(X)
        return action

    def interrupted():
        clf = CCClassifier(max_epochs=4, callbacks=[("stop", InterruptInEpoch(2))], **FAST)
        clf.fit(X, Y)
        return f"fits, {len(clf.history_)} epoch(s) in the history"

    return [
        ("CoRegClassifier with max_epochs <= warmup_epochs", warmup_only),
        ("NaN weights at a Co-Reg division, then predict", nan_weights_at_division),
        ("PRODEN with a NaN loss, then predict", nan_loss(PRODENClassifier)),
        ("CC with a NaN loss, then predict", nan_loss(CCClassifier)),
        ("KeyboardInterrupt during epoch 2 of 4", interrupted),
    ]


def test_the_table_of_input_and_training_cases_is_current():
    from _table import check_section, outcome

    inputs = [(name, outcome(action)) for name, action in INPUT_CASES]
    check_section("inputs", inputs)
    check_section("training", [(name, outcome(action)) for name, action in _training_cases()])
    failures = [f"{name}: {result}" for name, result in inputs
                if not result.startswith(("fits", "predicts", "ValueError", "TypeError",
                                          "FileNotFoundError", "ImageReadError"))]
    assert not failures, failures


# ------------------------------------------------------- generated inputs
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_X_WORDS = ("X", "sample", "feature", "array", "image")
_Y_WORDS = ("y", "candidate", "label", "class", "target")
_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def feature_matrices(draw, clean):
    """(X, valid): a clean float matrix of at least 2 rows, or (not
    ``clean``) any of clean, empty, 1-D, NaN/inf/huge values, other dtypes."""
    n = draw(st.integers(2, 12) if clean else st.integers(0, 12))
    d = draw(st.integers(1, 4) if clean else st.integers(0, 4))
    kind = "clean" if clean else draw(st.sampled_from(
        ["clean", "any floats", "ints", "bools", "1-D", "list"]))
    if kind == "clean":
        X_ = draw(hnp.arrays(np.float32, (n, d), elements=st.floats(-1e3, 1e3, width=32)))
    elif kind == "any floats":
        X_ = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(allow_nan=True,
                                                                    allow_infinity=True)))
    elif kind == "ints":
        X_ = draw(hnp.arrays(np.int64, (n, d), elements=st.integers(-10**6, 10**6)))
    elif kind == "bools":
        X_ = draw(hnp.arrays(np.bool_, (n, d)))
    elif kind == "1-D":
        X_ = draw(hnp.arrays(np.float32, (n,), elements=_FLOATS))
    else:
        X_ = draw(hnp.arrays(np.float32, (n, d), elements=_FLOATS)).tolist()
    arr = np.asarray(X_, dtype=np.float64) if np.size(X_) else np.zeros((n, d))
    with np.errstate(over="ignore"):
        valid = (np.ndim(X_) == 2 and n >= 2 and d >= 1
                 and np.isfinite(arr.astype(np.float32)).all())
    return X_, valid


@st.composite
def candidate_sets(draw, n, clean):
    """(y, valid): candidate matrices, labels or lists of sets for n rows;
    unless ``clean``, sometimes of another length, with empty sets, one
    column or a single class."""
    rows = n if clean else draw(st.sampled_from([n, n, max(n - 1, 0), n + 1]))
    c = draw(st.integers(2, 4) if clean else st.integers(1, 4))
    forms = ["matrix", "sparse", "frame", "labels", "string labels", "sets"]
    form = draw(st.sampled_from(forms if clean else forms + ["float labels", "one column"]))
    Y_ = draw(hnp.arrays(np.uint8, (rows, c), elements=st.integers(0, 1)))
    if clean or draw(st.booleans()):  # no empty set; two classes when n >= 2
        Y_[np.arange(rows), draw(st.permutations(np.arange(rows) % c))] = 1
    if form == "float labels":
        y_ = draw(hnp.arrays(np.float64, (rows,), elements=st.floats(allow_nan=True)))
    elif form in ("labels", "string labels"):
        y_ = draw(hnp.arrays(np.int64, (rows,), elements=st.integers(-1, c - 1)))
        if clean:
            y_ = Y_.argmax(1)
        Y_ = np.eye(c, dtype=np.uint8)[np.clip(y_, 0, None)] if rows else Y_
        if form == "string labels":
            y_ = np.array([f"c{v}" for v in y_], dtype=object)
    elif form == "sets":
        y_ = [{f"c{j}" for j in np.flatnonzero(row)} for row in Y_]
    elif form == "one column":
        y_ = Y_[:, :1]
    elif form == "sparse":
        y_ = sp.csr_matrix(Y_)
    elif form == "frame":
        y_ = pd.DataFrame(Y_, columns=[f"c{j}" for j in range(c)])
    else:
        y_ = Y_
    labels = form.endswith("labels")
    classes_used = np.unique(y_) if labels else np.flatnonzero(Y_.sum(0))
    integral = form != "float labels" or (np.isfinite(y_).all() and (y_ == np.round(y_)).all()
                                          and (np.abs(y_) < 2**52).all())
    valid = (rows == n and integral and len(classes_used) >= 2
             and (labels or (Y_.sum(1) > 0).all())
             and form != "one column" and not (form in ("matrix", "sparse", "frame") and c == 1))
    return y_, valid


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_generated_inputs_fit_or_name_the_culprit(data):
    free = data.draw(st.sampled_from(["none", "X", "y", "both"]), label="degenerate")
    X_, x_valid = data.draw(feature_matrices(clean=free in ("none", "y")), label="X")
    y_, y_valid = data.draw(candidate_sets(len(X_), clean=free in ("none", "X")), label="y")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            clf = CCClassifier(max_epochs=1, batch_size=4, module__hidden_sizes=(4,),
                               random_state=0).fit(X_, y_)
        except FloatingPointError as exc:  # finite but extreme features
            assert x_valid and y_valid and "check the inputs" in str(exc), str(exc)
            event("diverged")
            return
        except (ValueError, TypeError) as exc:
            message = str(exc)
            words = (() if x_valid else _X_WORDS) + (() if y_valid else _Y_WORDS)
            assert words, f"valid inputs were refused: {message}"
            assert any(re.search(rf"\b{w}", message) for w in words), message
            event(f"refused, X {'valid' if x_valid else 'invalid'}, y "
                  f"{'valid' if y_valid else 'invalid'}")
            return
    assert x_valid and y_valid, "invalid inputs were accepted"
    event("fitted")
    assert set(clf.predict(X_).tolist()) <= set(clf.classes_.tolist())

"""Warnings and errors that are true: epochs counted as the history counts
them, each warning once per fit, classes given to partial_fit honoured or
refused, candidate sets of every class and classes of no set named."""

import re
import warnings

import numpy as np
import pytest

from sklearn_npll import CCClassifier, CoRegClassifier, DistillationClassifier

from _common import NaNEncoder
from test_coreg_division_guard import FAST as GUARD, hidden_class_data
from test_checkpoints import COMMON, X, Y

NAMES = np.array(["apple", "banana", "cherry"])
y = Y.argmax(1)


def caught(action):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = action()
    return result, [str(w.message) for w in seen]


# ------------------------------------------------------------------ epochs
def test_a_divergence_names_the_epoch_as_the_history_counts_it():
    clf = CCClassifier(NaNEncoder, max_epochs=2, batch_size=16, random_state=0)
    with pytest.raises(FloatingPointError, match="diverged at epoch 1:"):
        clf.fit(X, Y)


def test_the_division_warning_names_the_epoch_of_the_history_once_per_network():
    Xh, Yh, _ = hidden_class_data()
    clf, messages = caught(lambda: CoRegClassifier(**{**GUARD, "max_epochs": 6}).fit(Xh, Yh))
    found = [m for m in messages if "trusted split holds no sample" in m]
    assert 1 <= len(found) <= 2  # once per network, whatever the number of epochs
    for message in found:
        epoch, network = re.match(r"Epoch (\d+): network ([AB])", message).groups()
        column = clf.history_[:, f"missing_classes_{network.lower()}"]
        first = 1 + next(i for i, v in enumerate(column) if v > 0)  # 1-based, as "epoch"
        assert int(epoch) == first == clf.history_[first - 1, "epoch"]
    assert sum(np.nansum(clf.history_[:, f"missing_classes_{k}"]) > 0 for k in "ab") \
        == len(found)


def test_a_skipped_co_training_is_warned_once_per_network_with_its_epoch():
    params = dict(COMMON, warmup_epochs=1, queue_size=32, proj_dim=8, p_threshold=1.0)
    clf, messages = caught(lambda: CoRegClassifier(max_epochs=4, **params).fit(X, Y))
    skipped = [m for m in messages if "skips its co-training" in m]
    assert [m[:20] for m in skipped] == ["Epoch 2: network A's", "Epoch 2: network B's"]
    assert clf.history_[1:, "n_trusted_a"] == [0, 0, 0]


# ------------------------------------------------------ classes and sets
def test_a_class_in_no_set_is_not_said_never_to_be_predicted():
    Y4 = np.c_[Y, np.zeros(len(Y), np.uint8)]
    # an untrained network (lr=0) predicts the unsupported class 3 for some samples
    clf, messages = caught(lambda: CCClassifier(lr=0.0, max_epochs=1, **COMMON).fit(X, Y4))
    assert (clf.predict(X) == 3).any()
    [message] = [m for m in messages if "no candidate set" in m]
    assert "[3]" in message and "never predicted" not in message
    assert "may still predict them" in message


def test_sets_of_every_class_are_warned_with_their_rows():
    full = Y.copy()
    full[[4, 7]] = 1
    _, messages = caught(lambda: CCClassifier(max_epochs=1, **COMMON).fit(X, full))
    assert [m for m in messages if "hold every class" in m] == [
        m for m in messages if m.startswith("2 of 36 candidate set(s) hold every class "
                                            "(rows [4, 7])")]
    assert any("hold every class" in m for m in messages)
    _, messages = caught(lambda: CCClassifier(max_epochs=1, **COMMON).fit(X, Y))
    assert not any("hold every class" in m for m in messages)


def test_partial_fit_honours_classes_no_sample_holds():
    clf = CCClassifier(**COMMON)
    classes = ["apple", "banana", "cherry", "kiwi"]
    with pytest.warns(UserWarning, match=r"no candidate set: \['kiwi'\]"):
        clf.partial_fit(X, NAMES[y], classes=classes)
    assert clf.classes_.tolist() == classes and clf.predict_proba(X).shape == (36, 4)
    clf.partial_fit(X, NAMES[y], classes=classes)  # repeated: continues
    clf.partial_fit(X, NAMES[y])
    assert len(clf.history_) == 3
    with pytest.raises(ValueError, match="not the same as on the first call"):
        clf.partial_fit(X, NAMES[y], classes=classes[:3])


def test_partial_fit_classes_name_the_columns_of_a_matrix():
    clf = CCClassifier(**COMMON).partial_fit(X, Y, classes=NAMES)
    assert clf.classes_.tolist() == NAMES.tolist()
    with pytest.raises(ValueError, match="classes"):
        CCClassifier(**COMMON).partial_fit(X, Y, classes=[*NAMES, "kiwi"])
    # columns that carry names keep them: classes in another order are refused
    frame = pytest.importorskip("pandas").DataFrame(Y, columns=NAMES)
    assert CCClassifier(**COMMON).partial_fit(X, frame, classes=NAMES).classes_.tolist() \
        == NAMES.tolist()
    with pytest.raises(ValueError, match="differs from the class names of y's columns"):
        CCClassifier(**COMMON).partial_fit(X, frame, classes=NAMES[::-1])


def test_distillation_partial_fit_honours_classes():
    P = Y / Y.sum(1, keepdims=True)
    clf = DistillationClassifier(**COMMON).partial_fit(X, P, classes=NAMES)
    assert clf.classes_.tolist() == NAMES.tolist()
    with pytest.raises(ValueError, match="not the same"):
        clf.partial_fit(X, P, classes=["a", "b", "c"])


# --------------------------------------------------------------- the table
def test_the_table_of_warnings_is_current():
    from _table import check_section, outcome

    Xh, Yh, _ = hidden_class_data()
    coreg = dict(COMMON, warmup_epochs=1, queue_size=32, proj_dim=8)
    Y4 = np.c_[Y, np.zeros(len(Y), np.uint8)]
    full = Y.copy()
    full[[4, 7]] = 1

    def unsupported_class():
        clf = CCClassifier(lr=0.0, max_epochs=1, **COMMON).fit(X, Y4)
        return f"fits, predicts class 3 for {(clf.predict(X) == 3).sum()} of {len(X)} samples"

    def partial_fits(*calls):
        def action():
            clf = CCClassifier(**COMMON)
            for target, classes in calls:
                clf.partial_fit(X, target, classes=classes)
            return f"fits, classes_ {clf.classes_.tolist()}"
        return action

    kiwi = [*NAMES, "kiwi"]
    cases = [
        ("NaN loss in the first epoch (CCClassifier)",
         lambda: CCClassifier(NaNEncoder, max_epochs=2, batch_size=16).fit(X, Y)),
        ("Co-Reg: a class leaves network A's trusted split in epochs 4 to 6 (of 6)",
         lambda: CoRegClassifier(**{**GUARD, "max_epochs": 6}).fit(Xh, Yh) and None),
        ("Co-Reg: no sample trusted (p_threshold=1.0) in epochs 2 to 4",
         lambda: CoRegClassifier(max_epochs=4, p_threshold=1.0, **coreg).fit(X, Y) and None),
        ("a class in no candidate set, untrained network (lr=0)", unsupported_class),
        ("2 of 36 candidate sets hold every class",
         lambda: CCClassifier(max_epochs=1, **COMMON).fit(X, full) and None),
        ("partial_fit(X, labels, classes=[..., 'kiwi']), no sample of kiwi",
         partial_fits((NAMES[y], kiwi))),
        ("partial_fit with classes=[..., 'kiwi'], then with other classes",
         partial_fits((NAMES[y], kiwi), (NAMES[y], NAMES))),
        ("partial_fit(X, 3-column candidate matrix, classes=4 names)",
         partial_fits((Y, kiwi))),
    ]
    check_section("warnings", [(case, outcome(action)) for case, action in cases])

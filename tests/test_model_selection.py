"""Cross-validation over candidate sets (CandidateSetKFold, the warning on a
fold whose training part lacks a class) and the one column rule by which
candidate sets meet a fitted model's classes_."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from sklearn_npll import AnnotatedImages, CCClassifier, covering_rate, covering_rate_scorer
from sklearn_npll.model_selection import CandidateSetKFold, _leading_classes

FAST = dict(batch_size=16, module__hidden_sizes=(16,), random_state=0)
NAMES = np.array(["cat", "dog", "fox"])


def blobs_in_class_order(n_per_class=12, seed=0):
    """Three separated blobs stored class by class, as a folder per class is."""
    rng = np.random.RandomState(seed)
    centers = rng.normal(0, 4, (3, 5))
    X = np.concatenate([rng.normal(c, 1.0, (n_per_class, 5)) for c in centers])
    return X.astype(np.float32), np.repeat(np.arange(3), n_per_class)


X, y = blobs_in_class_order()
ONE_HOT = np.eye(3, dtype=np.uint8)[y]
Y = ONE_HOT.copy()
THIRD = np.arange(0, len(y), 3)
Y[THIRD, (y[THIRD] + 1) % 3] = 1      # a third of the sets hold a second class
SETS = [set(NAMES[np.flatnonzero(row)]) for row in Y]


def trained(**params):
    return CCClassifier(**{"max_epochs": 10, "lr": 0.05, **FAST, **params})


def scores(cv, X_=X, y_=ONE_HOT, **kwargs):
    return cross_val_score(trained(), X_, y_, cv=cv, **kwargs)


def quietly(action):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return action()


# ------------------------------------------------------------ the splitter
def test_plain_cv_on_class_order_holds_out_unseen_classes_and_warns():
    with pytest.warns(UserWarning, match=r"12 of the 12 scored samples hold class\(es\) \[0\]"
                                         r".*CandidateSetKFold"):
        result = scores(3)
    np.testing.assert_array_equal(result, [0, 0, 0])


@pytest.mark.parametrize("target", [ONE_HOT, pd.DataFrame(ONE_HOT, columns=NAMES),
                                    sp.csr_matrix(ONE_HOT), list(NAMES[y]),
                                    [{name} for name in NAMES[y]]],
                         ids=["matrix", "frame", "sparse", "labels", "sets"])
def test_every_fold_trains_on_every_class_it_tests(target):
    cv = CandidateSetKFold(3, random_state=0)
    folds = list(cv.split(X, target))
    assert len(folds) == cv.get_n_splits() == 3
    for train, test in folds:
        assert np.bincount(y[test], minlength=3).tolist() == [4, 4, 4]
        assert set(y[train]) == {0, 1, 2}
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(y)))


def test_stratified_scores_beat_the_class_ordered_folds():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fold lacks a class: no warning at all
        result = scores(CandidateSetKFold(3, random_state=0))
    np.testing.assert_array_equal(result, [1, 1, 1])


def test_shuffled_by_default_and_reproducible_with_a_seed():
    def tests(cv):
        return [test.tolist() for _, test in cv.split(X, Y)]

    assert tests(CandidateSetKFold(3, random_state=0)) == tests(CandidateSetKFold(3, random_state=0))
    assert tests(CandidateSetKFold(3, random_state=0)) != tests(CandidateSetKFold(3, random_state=1))
    unshuffled = tests(CandidateSetKFold(3, shuffle=False))
    assert unshuffled == tests(CandidateSetKFold(3, shuffle=False))
    assert unshuffled != tests(CandidateSetKFold(3, random_state=0))
    assert CandidateSetKFold().shuffle is True
    with pytest.raises(ValueError, match="random_state"):
        list(CandidateSetKFold(3, shuffle=False, random_state=0).split(X, Y))
    assert repr(CandidateSetKFold(4, random_state=2)) == (
        "CandidateSetKFold(n_splits=4, random_state=2, shuffle=True)")


def test_leading_class_is_most_voted_then_most_probable_then_rarest():
    # column sums 3, 2, 1: the rarest candidate is the last column
    Y01 = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    assert _leading_classes(Y01).tolist() == [2, 1, 0]
    votes = np.array([[0, 0, 1], [1, 0, -1], [0, -1, -1]])      # row 1: a tie 0 vs 1
    assert _leading_classes(Y01, votes=votes).tolist() == [0, 1, 0]
    proba = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [1, 0, 0]])
    assert _leading_classes(Y01, proba=proba).tolist() == [1, 0, 0]
    # votes first; among tied votes, the higher probability
    assert _leading_classes(Y01, votes=votes, proba=proba).tolist() == [0, 0, 0]
    # a vote for a class outside the set counts for nothing
    assert _leading_classes(np.array([[0, 1, 1]]), votes=[[0, 0, 2]]).tolist() == [2]


def test_annotated_images_are_stratified_on_their_votes():
    # every set holds all three classes; the votes tell the classes apart
    votes = np.c_[y, y, (y + 1) % 3]
    data = AnnotatedImages(X, np.ones((len(y), 3), np.uint8), NAMES, votes=votes)
    for _, test in CandidateSetKFold(3, random_state=0).split(data):
        assert np.bincount(y[test], minlength=3).tolist() == [4, 4, 4]


def test_search_and_cross_val_score_accept_it_with_every_kind_of_input():
    cv = CandidateSetKFold(3, random_state=0)
    data = AnnotatedImages(X, ONE_HOT, NAMES)
    for X_, y_ in [(X, ONE_HOT), (X, [{n} for n in NAMES[y]]), (data, None)]:
        search = GridSearchCV(trained(), {"lr": [0.05]}, cv=cv,
                              scoring=covering_rate_scorer, error_score="raise")
        assert search.fit(X_, y_).cv_results_["mean_test_score"][0] == 1.0
        assert cross_val_score(trained(), X_, y_, cv=cv).tolist() == [1, 1, 1]


def test_without_candidate_sets_the_folds_are_a_shuffled_kfold():
    images = np.zeros((12, 4, 4), np.uint8)   # a label-free Pipeline's input
    ours = [test.tolist() for _, test in CandidateSetKFold(3, random_state=0).split(images)]
    kfold = [test.tolist() for _, test in KFold(3, shuffle=True, random_state=0).split(images)]
    assert ours == kfold


def test_a_class_too_rare_for_every_training_part_is_warned_by_fold():
    Y4 = np.c_[Y, np.zeros(len(Y), np.uint8)]
    Y4[5, 3] = 1                                       # class 3: a single set
    cv = CandidateSetKFold(3, random_state=0)
    with pytest.warns(UserWarning, match=r"In 1 of the 3 folds.*fold \d: \[3\]"):
        folds = list(cv.split(X, Y4))
    (fold,) = [i for i, (_, test) in enumerate(folds) if 5 in test]
    with pytest.warns(UserWarning, match=rf"fold {fold}: \['owl'\]"):
        list(cv.split(X, pd.DataFrame(Y4, columns=[*NAMES, "owl"])))


def test_splitter_refusals():
    with pytest.raises(ValueError, match="n_splits=5 is more than the samples of every stratum"):
        list(CandidateSetKFold(5).split(X[:9], np.eye(3, dtype=int)[np.arange(9) % 3]))
    with pytest.raises(ValueError, match="35 rows but X has 36"):
        list(CandidateSetKFold(3).split(X, Y[:-1]))
    with pytest.warns(UserWarning, match="groups parameter is ignored"):
        list(CandidateSetKFold(3, random_state=0).split(X, Y, groups=y))


# ------------------------------------------------------ the column rule
class Constant(ClassifierMixin, BaseEstimator):
    """Predicts one class name for every sample; classes_ as given."""

    def __init__(self, classes=("cat", "dog", "fox"), choice="dog"):
        self.classes = classes
        self.choice = choice

    def fit(self, X, y=None):
        self.classes_ = np.asarray(self.classes)
        return self

    def predict(self, X):
        return np.full(len(X), self.choice)


@pytest.fixture(scope="module")
def fitted_on_names():
    """A classifier fitted on sets of names: classes_ sorted, not in the
    users' order."""
    order = np.array([2, 0, 1])   # the user's order: fox, cat, dog
    frame = pd.DataFrame(Y[:, order], columns=NAMES[order])
    return quietly(lambda: trained().fit(X, SETS)), frame


def test_dataframes_are_matched_by_name_in_score_and_scorer(fitted_on_names):
    clf, frame = fitted_on_names
    assert clf.classes_.tolist() == ["cat", "dog", "fox"]
    expected = covering_rate(SETS, clf.predict(X), classes=NAMES)
    assert expected > 0.9
    shuffled = frame[["dog", "fox", "cat"]]
    for Y_ in (frame, shuffled, SETS, Y):   # Y: a plain array in classes_ order
        assert clf.score(X, Y_) == expected
        assert covering_rate_scorer(clf, X, Y_) == expected
    assert covering_rate(frame, clf.predict(X)) == expected
    assert covering_rate(shuffled, clf.predict(X), classes=["fox", "cat", "dog"]) == expected


def test_annotated_images_columns_are_matched_by_name_in_score_too(fitted_on_names):
    clf, frame = fitted_on_names
    data = AnnotatedImages(X, frame.to_numpy(), frame.columns)   # fox, cat, dog
    assert clf.score(data) == covering_rate_scorer(clf, data) == clf.score(X, SETS)


@pytest.mark.parametrize("columns, match", [
    (["cat", "dog", "owl"], r"columns \['owl'\] name no class and classes \['fox'\]"),
    (["cat", "dog"], r"columns \[\] name no class and classes \['fox'\] have no column"),
    (["cat", "dog", "fox", "owl"], r"columns \['owl'\] name no class"),
    (["cat", "cat", "dog"], "duplicate column names"),
])
def test_dataframes_with_unknown_or_missing_columns_are_refused(fitted_on_names, columns, match):
    clf, _ = fitted_on_names
    frame = pd.DataFrame(np.ones((len(X), len(columns)), np.uint8), columns=columns)
    for score in (clf.score, lambda X_, Y_: covering_rate_scorer(clf, X_, Y_),
                  lambda X_, Y_: covering_rate(Y_, clf.predict(X_), classes=clf.classes_)):
        with pytest.raises(ValueError, match=match):
            score(X, frame)


def test_a_plain_array_of_another_width_is_refused(fitted_on_names):
    clf, _ = fitted_on_names
    with pytest.raises(ValueError, match=r"2 columns but the model knows 3 classes "
                                         r"\(\['cat', 'dog', 'fox'\]\); the columns of a "
                                         r"plain array follow classes_"):
        clf.score(X, Y[:, :2])


def test_pandas_default_column_numbers_are_positions_unless_they_are_the_classes():
    Y6 = np.eye(3, dtype=np.uint8)[[0, 0, 0, 1, 1, 2]]
    numbered = pd.DataFrame(Y6)                          # columns 0, 1, 2: positions
    clf = Constant(choice="cat").fit(X)
    assert covering_rate_scorer(clf, X[:6], numbered) == covering_rate_scorer(clf, X[:6], Y6)
    assert covering_rate_scorer(clf, X[:6], numbered) == 0.5
    by_number = Constant(classes=(2, 0, 1), choice=2).fit(X)    # the numbers are class names
    assert covering_rate_scorer(by_number, X[:6], numbered) == 1 / 6


def test_fit_matches_dataframe_columns_to_known_classes_by_name():
    data = AnnotatedImages(X, Y, NAMES)
    reordered = pd.DataFrame(Y, columns=NAMES)[["fox", "cat", "dog"]]
    a = quietly(lambda: trained(max_epochs=2).fit(data, Y))
    b = quietly(lambda: trained(max_epochs=2).fit(data, reordered))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    with pytest.raises(ValueError, match=r"\['owl'\] name no class"):
        trained(max_epochs=1).fit(data, reordered.rename(columns={"fox": "owl"}))
    # partial_fit reads the columns against classes_ the same way
    c, d = copy.deepcopy(a), copy.deepcopy(a)
    c.partial_fit(data, Y)
    d.partial_fit(data, reordered)
    np.testing.assert_array_equal(c.predict_proba(X), d.predict_proba(X))
    assert not np.array_equal(c.predict_proba(X), a.predict_proba(X))


def test_sets_naming_a_class_the_model_never_saw_are_warned_and_scored():
    train = [s - {"fox"} for s, label in zip(SETS, y) if label < 2]
    clf = quietly(lambda: trained().fit(X[y < 2], train))
    assert clf.classes_.tolist() == ["cat", "dog"]
    test_sets = [{"fox"}, {"fox", "cat"}, {"dog"}]
    pred = clf.predict(X[[30, 0, 12]])
    expected = np.mean([p in s for p, s in zip(pred, test_sets)])
    with pytest.warns(UserWarning, match=r"2 of the 3 scored samples hold class\(es\) \['fox'\]"):
        assert clf.score(X[[30, 0, 12]], test_sets) == expected
    assert expected <= 2 / 3


def test_a_class_with_no_training_set_is_warned_at_scoring():
    clf = quietly(lambda: trained(max_epochs=1).fit(X[y < 2], Y[y < 2]))
    assert clf.candidate_counts_.tolist() == Y[y < 2].sum(axis=0).tolist() == [12, 16, 4]
    clf = quietly(lambda: trained().fit(X[y < 2], ONE_HOT[y < 2]))
    assert clf.candidate_counts_.tolist() == [12, 12, 0]
    with pytest.warns(UserWarning, match=r"12 of the 24 scored samples hold class\(es\) \[2\]"):
        clf.score(X[y > 0], ONE_HOT[y > 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.score(X[y < 2], ONE_HOT[y < 2])
        covering_rate_scorer(Constant().fit(X), X, SETS)   # no record: nothing to compare


# ------------------------------------------------------------ the table
def _cv(X_, y_, cv, **kwargs):
    return lambda: f"scores {cross_val_score(trained(), X_, y_, cv=cv, **kwargs).tolist()}"


def _score(Y_, scorer=False):
    def action():
        clf = quietly(lambda: trained().fit(X, SETS))
        value = covering_rate_scorer(clf, X, Y_) if scorer else clf.score(X, Y_)
        return f"covering rate {value:.3f}"
    return action


def _split_with_a_single_set_class():
    Y4 = np.c_[Y, np.zeros(len(Y), np.uint8)]
    Y4[5, 3] = 1
    return lambda: f"{len(list(CandidateSetKFold(3, random_state=0).split(X, Y4)))} folds"


FRAME = pd.DataFrame(Y, columns=NAMES)
CASES = [
    ("cross_val_score, one-hot candidate matrix in class order, cv=3", _cv(X, ONE_HOT, 3)),
    ("cross_val_score, one-hot candidate matrix in class order, "
     "cv=CandidateSetKFold(3, random_state=0)", _cv(X, ONE_HOT, CandidateSetKFold(3, random_state=0))),
    ("cross_val_score, sets of names in class order (each class also a second candidate "
     "of another class's sets), cv=3, scoring=covering_rate_scorer",
     _cv(X, SETS, 3, scoring=covering_rate_scorer)),
    ("same sets, cv=CandidateSetKFold(3, random_state=0), scoring=covering_rate_scorer",
     _cv(X, SETS, CandidateSetKFold(3, random_state=0), scoring=covering_rate_scorer)),
    ("cross_val_score, AnnotatedImages in class order, y=None, cv=CandidateSetKFold(3, random_state=0)",
     _cv(AnnotatedImages(X, Y, NAMES), None, CandidateSetKFold(3, random_state=0))),
    ("CandidateSetKFold(3).split, a class held by a single set", _split_with_a_single_set_class()),
    ("CandidateSetKFold(5).split, 9 samples of 3 classes",
     lambda: list(CandidateSetKFold(5).split(X[:9], np.eye(3, dtype=int)[np.arange(9) % 3]))),
    ("model fitted on sets of names (classes_ sorted); score(X, DataFrame in the user's order)",
     _score(FRAME[["fox", "cat", "dog"]])),
    ("same model; score(X, plain array in classes_ order)", _score(Y)),
    ("same model; covering_rate_scorer(model, X, DataFrame with a column renamed 'owl')",
     _score(FRAME.rename(columns={"fox": "owl"}), scorer=True)),
    ("same model; score(X, DataFrame missing the column 'fox')", _score(FRAME[["cat", "dog"]])),
    ("same model; score(X, plain array of 2 columns)", _score(Y[:, :2])),
    ("same model; score on sets naming a class it was not fitted on",
     _score([s | {"owl"} if i % 2 else s for i, s in enumerate(SETS)])),
]


def test_the_table_of_model_selection_cases_is_current():
    from _table import check_section, outcome

    check_section("model selection", [(name, outcome(action)) for name, action in CASES])

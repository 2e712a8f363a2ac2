"""skorch's own callbacks on these estimators: Checkpoint, LoadInitState and
TrainEndCheckpoint resume exactly; callbacks that need a validation split
are refused without one; scoring callbacks on the training split see
consistent samples, candidate rows and predictions."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
from skorch.callbacks import (Callback, Checkpoint, EarlyStopping, EpochScoring,
                              LoadInitState, LRScheduler, TrainEndCheckpoint)
from torch.optim.lr_scheduler import ReduceLROnPlateau

from sklearn_npll import (CCClassifier, CoRegClassifier, DistillationClassifier,
                          PRODENClassifier)
from sklearn_npll.callbacks import CheckpointError

from test_checkpoints import COMMON, PARAMS, X, Y

ESTIMATORS = {"CoRegClassifier": CoRegClassifier, "PRODENClassifier": PRODENClassifier,
              "CCClassifier": CCClassifier, "DistillationClassifier": DistillationClassifier}
PARAMS = {**PARAMS, "DistillationClassifier": dict(lr=0.05)}
P = Y / Y.sum(1, keepdims=True)  # the distillation's teacher probabilities


def make(name, callbacks=(), **params):
    return ESTIMATORS[name](callbacks=list(callbacks),
                           **{**COMMON, **PARAMS[name], **params})


def fit(name, callbacks=(), n=len(X), **params):
    target = P if name == "DistillationClassifier" else Y
    return make(name, callbacks, **params).fit(X[:n], target[:n])


def uninterrupted(name, epochs=8):
    return fit(name, max_epochs=epochs).predict_proba(X)


def skorch_checkpoint(folder, **kw):
    """skorch's Checkpoint with its defaults (f_params, f_optimizer,
    f_criterion, f_history), saving every epoch."""
    return Checkpoint(dirname=str(folder), monitor=None, **kw)


def resume(name, cp, epochs=8, **params):
    return fit(name, [("cp", cp), ("resume", LoadInitState(cp))], max_epochs=epochs, **params)


# ------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", ESTIMATORS)
def test_skorch_checkpoint_and_load_init_state_resume_exactly(name, tmp_path):
    fit(name, [("cp", skorch_checkpoint(tmp_path))], max_epochs=4)
    resumed = resume(name, skorch_checkpoint(tmp_path))  # a new Checkpoint, as in a new run
    assert len(resumed.history_) == 8 and resumed.history_[:4, "epoch"] == [1, 2, 3, 4]
    np.testing.assert_array_equal(resumed.predict_proba(X), uninterrupted(name))
    saved = {p.name for p in tmp_path.iterdir()}
    assert {"params.pt", "optimizer.pt", "history.json", "random_state.pt",
            "fitted.json"} <= saved
    others = {f"{m}.pt" for m in ("module2", "coreg_state", "proden_state")}
    assert saved & others == {"CoRegClassifier": {"module2.pt", "coreg_state.pt"},
                              "PRODENClassifier": {"proden_state.pt"}}.get(name, set())


def test_without_a_criterion_file_network_b_is_resumed_too(tmp_path):
    cp = dict(f_criterion=None, f_params="params_{last_epoch[epoch]}.pt", fn_prefix="run1_")
    fit("CoRegClassifier", [("cp", skorch_checkpoint(tmp_path, **cp))], max_epochs=4)
    assert (tmp_path / "run1_module2_4.pt").exists()
    resumed = resume("CoRegClassifier", skorch_checkpoint(tmp_path, **cp))
    np.testing.assert_array_equal(resumed.predict_proba(X), uninterrupted("CoRegClassifier"))


@pytest.mark.parametrize("name", ["CoRegClassifier", "PRODENClassifier"])
def test_train_end_checkpoint_loads_into_a_fresh_estimator(name, tmp_path):
    fitted = fit(name, [("end", TrainEndCheckpoint(dirname=str(tmp_path)))], max_epochs=4)
    fresh = make(name)
    fresh.load_params(checkpoint=TrainEndCheckpoint(dirname=str(tmp_path)))
    np.testing.assert_array_equal(fresh.predict_proba(X), fitted.predict_proba(X))
    assert fresh.classes_.tolist() == fitted.classes_.tolist()
    assert fresh.history_[:, "train_loss"] == fitted.history_[:, "train_loss"]


def test_safetensors_checkpoint_files_load_into_a_fresh_estimator(tmp_path):
    # safetensors holds tensors only: no optimizer (skorch refuses it)
    kw = dict(dirname=str(tmp_path), use_safetensors=True, f_optimizer=None)
    fitted = fit("CoRegClassifier", [("end", TrainEndCheckpoint(**kw))], max_epochs=3)
    fresh = make("CoRegClassifier")
    fresh.load_params(checkpoint=TrainEndCheckpoint(**kw), use_safetensors=True)
    np.testing.assert_array_equal(fresh.predict_proba(X), fitted.predict_proba(X))
    assert fresh._random_states["epoch"] == 3
    for name in ("module_", "module2_", "coreg_state_"):  # buffers included
        saved, loaded = getattr(fitted, name).state_dict(), getattr(fresh, name).state_dict()
        assert all(torch.equal(saved[key], loaded[key]) for key in saved), name


def test_load_init_state_resumes_from_a_train_end_checkpoint(tmp_path):
    fit("CoRegClassifier", [("end", TrainEndCheckpoint(dirname=str(tmp_path)))], max_epochs=4)
    end = TrainEndCheckpoint(dirname=str(tmp_path))
    resumed = fit("CoRegClassifier", [("end", end), ("resume", LoadInitState(end))],
                  max_epochs=8)
    np.testing.assert_array_equal(resumed.predict_proba(X), uninterrupted("CoRegClassifier"))


def test_a_checkpoint_object_serves_another_estimator_after_one(tmp_path):
    cp = skorch_checkpoint(tmp_path)
    fit("CoRegClassifier", [("cp", cp)], max_epochs=1)
    assert hasattr(cp, "f_module2")
    fit("CCClassifier", [("cp", cp)], max_epochs=4)
    assert not hasattr(cp, "f_module2") and not hasattr(cp, "f_coreg_state")
    resumed = resume("CCClassifier", skorch_checkpoint(tmp_path))
    np.testing.assert_array_equal(resumed.predict_proba(X), uninterrupted("CCClassifier"))


def _remove(folder, name):
    (folder / name).unlink()


def _torn(folder):
    # the random states of another epoch next to this history
    other = folder.parent / "other"
    fit("CoRegClassifier", [("cp", skorch_checkpoint(other))], max_epochs=2)
    shutil.copy(other / "random_state.pt", folder / "random_state.pt")


# (case, damage of a 3-epoch skorch checkpoint, samples of the resumed fit, expected)
DAMAGES = [
    ("module2.pt removed", lambda f: _remove(f, "module2.pt"), 36, "module2.pt missing"),
    ("history.json removed", lambda f: _remove(f, "history.json"), 36, "history.json missing"),
    ("random_state.pt of another epoch (torn)", _torn, 36, "is torn"),
    ("resumed on other data (30 of the 36 samples)", lambda f: None, 30,
     "saved for 36 training samples; this fit has 30"),
    ("resumed by another estimator (CCClassifier)", lambda f: "CCClassifier", 36,
     "does not fit CCClassifier"),
]


@pytest.mark.parametrize("case, damage, n, expected", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_an_incomplete_or_foreign_skorch_checkpoint_refuses_to_resume(
        tmp_path, case, damage, n, expected):
    folder = tmp_path / "cp"
    fit("CoRegClassifier", [("cp", skorch_checkpoint(folder))], max_epochs=3)
    name = damage(folder) or "CoRegClassifier"
    with pytest.raises(CheckpointError, match=expected):
        resume(name, skorch_checkpoint(folder), epochs=4, n=n)


REFUSED = [
    ("Checkpoint() without a validation split", lambda d: [Checkpoint(dirname=str(d))],
     {}, "monitors 'valid_loss_best'.*validation_fraction.*monitor=None"),
    ("EarlyStopping() without a validation split", lambda d: [EarlyStopping()], {},
     "monitors 'valid_loss'.*validation_fraction"),
    ("LRScheduler(ReduceLROnPlateau, monitor='valid_loss') without a validation split",
     lambda d: [LRScheduler(ReduceLROnPlateau, monitor="valid_loss")], {},
     "monitors 'valid_loss'.*validation_fraction"),
    ("EpochScoring(scorer) on the validation split without one",
     lambda d: [EpochScoring(lambda net, X, y: 0.0, name="s")], {},
     "on_train=False.*validation_fraction"),
    ("EarlyStopping(load_best=True) on CoRegClassifier (two predicting networks)",
     lambda d: [EarlyStopping(load_best=True)], {"validation_fraction": 0.25},
     "restores module_ only.*Checkpoint"),
    ("skorch Checkpoint with a file object as f_params",
     lambda d: [Checkpoint(monitor=None, f_params=io.BytesIO(), f_optimizer=None,
                           f_criterion=None, f_history=None)], {}, "file object"),
    ("LoadInitState(Checkpoint(f_optimizer=None))",
     lambda d: [LoadInitState(Checkpoint(dirname=str(d), monitor=None, f_optimizer=None))],
     {}, "f_optimizer=None.*fresh optimizer"),
    ("LoadInitState(Checkpoint(f_module2=None)) on CoRegClassifier",
     lambda d: [LoadInitState(Checkpoint(dirname=str(d), monitor=None, f_module2=None))],
     {}, "f_module2=None.*a fresh module2_"),
]


@pytest.mark.parametrize("case, callbacks, params, expected", REFUSED,
                         ids=[r[0] for r in REFUSED])
def test_callbacks_that_would_fail_or_mislead_are_refused_at_fit(
        tmp_path, case, callbacks, params, expected):
    clf = make("CoRegClassifier", callbacks(tmp_path), max_epochs=3, **params)
    with pytest.raises(ValueError, match=expected):
        clf.fit(X, Y)
    assert len(clf.history_) == 0  # refused before the first epoch


def test_early_stopping_with_checkpoint_load_best_restores_the_best_epoch(tmp_path):
    cp = Checkpoint(dirname=str(tmp_path), load_best=True)
    clf = fit("CCClassifier", [("stop", EarlyStopping(patience=2)), ("cp", cp)],
              max_epochs=40, validation_fraction=0.25)
    # stopped early; the networks, optimizer and history of the best epoch loaded
    best = len(clf.history_)
    assert best < 38 and clf.history_[-1, "valid_loss_best"]
    np.testing.assert_array_equal(
        clf.predict_proba(X),
        fit("CCClassifier", max_epochs=best, validation_fraction=0.25).predict_proba(X))


# ----------------------------------------------------------------- scoring
class BatchPredictions(Callback):
    """The predictions of the training batches, as skorch's scoring caches them."""

    def on_epoch_begin(self, net, **kwargs):
        self.preds = []

    def on_batch_end(self, net, training, y_pred=None, **kwargs):
        if training:
            self.preds.append(y_pred.argmax(1).cpu().numpy())


def recording_scorer(seen):
    def scorer(net, X, y):
        seen.append((np.asarray(X.indices).copy(), y, net.predict(X)))
        return 0.0
    return scorer


@pytest.mark.parametrize("name", ["CoRegClassifier", "CCClassifier"])
@pytest.mark.parametrize("caching", [True, False])
def test_training_scores_see_one_row_per_sample_candidate_set_and_prediction(name, caching):
    seen, batches = [], BatchPredictions()
    score = EpochScoring(recording_scorer(seen), on_train=True, use_caching=caching)
    clf = fit(name, [("batches", batches), ("score", score)], max_epochs=3,
              validation_fraction=0.25, **({"warmup_epochs": 1} if name == "CoRegClassifier"
                                           else {}))
    assert len(seen) == 3
    holdout = set(range(len(X))) - set(seen[-1][0])
    assert len(holdout) >= 9  # the hold-out is not scored as training
    for rows, y, predictions in seen:
        assert len(rows) == len(y) == len(predictions) > 0
        np.testing.assert_array_equal(y, Y[rows])
    last_rows, _, last_predictions = seen[-1]
    if caching:  # the predictions of the training steps, in the order trained
        np.testing.assert_array_equal(last_predictions,
                                      clf.classes_[np.concatenate(batches.preds)])
    else:
        np.testing.assert_array_equal(last_predictions, clf.predict(X[last_rows]))


@pytest.mark.parametrize("caching", [True, False])
def test_validation_scores_see_the_candidate_rows_with_or_without_caching(caching):
    seen = []
    score = EpochScoring(recording_scorer(seen), use_caching=caching)
    fit("CCClassifier", [("score", score)], max_epochs=2, validation_fraction=0.25)
    for rows, y, predictions in seen:
        assert y is not None and len(rows) == len(y) == len(predictions) == 9


# --------------------------------------------------------------- the table
def _resume_case(cp_kw):
    def action(folder):
        fit("CoRegClassifier", [("cp", skorch_checkpoint(folder, **cp_kw))], max_epochs=4)
        resumed = resume("CoRegClassifier", skorch_checkpoint(folder, **cp_kw))
        same = np.array_equal(resumed.predict_proba(X), uninterrupted("CoRegClassifier"))
        return (f"fits, {len(resumed.history_)} epochs; predictions "
                f"{'identical to' if same else 'differ from'} an uninterrupted fit")
    return action


def _train_end_case(folder):
    fitted = fit("CoRegClassifier", [("end", TrainEndCheckpoint(dirname=str(folder)))],
                 max_epochs=4)
    fresh = make("CoRegClassifier")
    fresh.load_params(checkpoint=TrainEndCheckpoint(dirname=str(folder)))
    same = np.array_equal(fresh.predict_proba(X), fitted.predict_proba(X))
    return f"loads; predicts {'as' if same else 'unlike'} the fitted model"


def _scoring_case(caching):
    def action(folder):
        seen = []
        score = EpochScoring(recording_scorer(seen), on_train=True, use_caching=caching)
        fit("CoRegClassifier", [("score", score)], max_epochs=2, warmup_epochs=1)
        rows, y, predictions = seen[-1]
        return (f"fits; the scorer sees X of {len(rows)} rows, y of "
                f"{'None' if y is None else len(y)}, {len(predictions)} predictions")
    return action


def _damage_case(damage, n):
    def action(folder):
        fit("CoRegClassifier", [("cp", skorch_checkpoint(folder))], max_epochs=3)
        name = damage(folder) or "CoRegClassifier"
        resume(name, skorch_checkpoint(folder), epochs=4, n=n)
    return action


def _refused_case(callbacks, params):
    def action(folder):
        make("CoRegClassifier", callbacks(folder), max_epochs=3, **params).fit(X, Y)
    return action


def test_the_table_of_skorch_callbacks_is_current(tmp_path):
    from _table import check_section, outcome

    cases = [
        ("CoRegClassifier with skorch's Checkpoint() defaults (monitor=None) and "
         "LoadInitState: 4 epochs, then resumed to 8", _resume_case({})),
        ("the same with Checkpoint(f_criterion=None)", _resume_case({"f_criterion": None})),
        ("TrainEndCheckpoint, then load_params(checkpoint=TrainEndCheckpoint(dirname)) "
         "into a fresh CoRegClassifier", _train_end_case),
        ("EpochScoring(callable, on_train=True) on CoRegClassifier, use_caching=True",
         _scoring_case(True)),
        ("EpochScoring(callable, on_train=True) on CoRegClassifier, use_caching=False",
         _scoring_case(False)),
    ]
    cases += [(f"skorch Checkpoint: {case}", _damage_case(damage, n))
              for case, damage, n, _ in DAMAGES]
    cases += [(case, _refused_case(callbacks, params))
              for case, callbacks, params, _ in REFUSED]
    rows = []
    for i, (case, action) in enumerate(cases):
        folder = tmp_path / f"case{i}"
        rows.append((case, outcome(lambda: action(folder), [folder])))
    check_section("skorch callbacks", rows)
    assert all("identical to" in r for _, r in rows[:2]) and "predicts as" in rows[2][1]
    assert all(r.startswith(("CheckpointError", "ValueError")) for _, r in rows[5:])

"""skorch's contract as a skorch user meets it: callbacks (scoring, gradient
clipping, learning-rate schedules, progress bar, checkpoints), the schedule
across continued training, and partial_fit / warm_start."""

import math

import numpy as np
import pytest
import torch
from skorch.callbacks import (BatchScoring, Callback, Checkpoint, EpochScoring,
                              GradientNormClipping, LRScheduler, ProgressBar)
from torch.optim.lr_scheduler import StepLR

from sklearn_npll import CCClassifier, CoRegClassifier, make_partial_labels
from sklearn_npll.metrics import covering_rate_scorer

FAST = dict(batch_size=16, module__hidden_sizes=(16,), random_state=0)
COREG = dict(warmup_epochs=1, start_contrastive=0, queue_size=64, proj_dim=16, **FAST)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    centers = rng.normal(0, 4, (3, 5))
    X = np.concatenate([rng.normal(c, 1.0, (24, 5)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(3), 24)
    Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.1, random_state=0)
    return X, Y


class Recorder(Callback):
    """Keeps what skorch's batch and gradient events carry."""

    def initialize(self):
        self.batches, self.grads = [], []
        return self

    def on_batch_end(self, net, batch, training, loss=None, y_pred=None, **kwargs):
        X, y = batch
        self.batches.append((training, tuple(X.shape), tuple(y.shape), tuple(y_pred.shape),
                             float(loss)))

    def on_grad_computed(self, net, named_parameters, **kwargs):
        params = [p for _, p in named_parameters]
        norm = torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]))
        self.grads.append(({id(p) for p in params}, float(norm)))


def test_batch_events_carry_real_batches_predictions_and_losses(data):
    X, Y = data
    rec = Recorder()
    clf = CoRegClassifier(max_epochs=2, validation_fraction=0.25, callbacks=[("rec", rec)],
                          **COREG).fit(X, Y)
    train = [b for b in rec.batches if b[0]]
    valid = [b for b in rec.batches if not b[0]]
    assert len(train) == sum(clf.history_[:, "train_batch_count"])
    for _, x_shape, y_shape, pred_shape, loss in rec.batches:
        assert x_shape[1:] == (5,) and y_shape == (x_shape[0], 3) == pred_shape
        assert np.isfinite(loss)
    assert sum(b[1][0] for b in valid) == 2 * 18  # the hold-out, each epoch


@pytest.mark.parametrize("scoring", [None, covering_rate_scorer])
def test_epoch_scoring_on_validation_matches_the_covering_rate(data, scoring):
    X, Y = data
    score = EpochScoring(scoring, lower_is_better=False, name="my_score")
    clf = CoRegClassifier(max_epochs=3, validation_fraction=0.25,
                          callbacks=[("score", score)], **COREG).fit(X, Y)
    np.testing.assert_allclose(clf.history_[:, "my_score"],
                               clf.history_[:, "valid_covering_rate"])
    assert clf.history_[0, "my_score_best"] is True


def test_epoch_and_batch_scoring_on_training_batches(data):
    X, Y = data
    callbacks = [("epoch", EpochScoring(covering_rate_scorer, on_train=True,
                                        lower_is_better=False, name="train_cr")),
                 ("batch", BatchScoring(covering_rate_scorer, on_train=True,
                                        lower_is_better=False, name="batch_cr"))]
    clf = CCClassifier(max_epochs=2, callbacks=callbacks, **FAST).fit(X, Y)
    for row in clf.history_:
        per_batch = [b["batch_cr"] for b in row["batches"]]
        assert len(per_batch) == row["train_batch_count"]
        assert all(0 <= v <= 1 for v in per_batch)
        sizes = [b["train_batch_size"] for b in row["batches"]]
        # the epoch score over all cached batches is their size-weighted mean
        assert row["train_cr"] == pytest.approx(np.average(per_batch, weights=sizes))


def test_gradient_norm_clipping_acts_on_each_network(data):
    X, Y = data
    rec = Recorder()
    clf = CoRegClassifier(max_epochs=2, callbacks=[
        ("clip", GradientNormClipping(gradient_clip_value=1e-3)), ("rec", rec)],
        **COREG).fit(X, Y)
    ids_a = {id(p) for p in clf.module_.parameters() if p.requires_grad}
    ids_b = {id(p) for p in clf.module2_.parameters() if p.requires_grad}
    seen = [ids for ids, _ in rec.grads]
    assert seen.count(ids_a) > 0 and seen.count(ids_b) > 0
    assert seen.count(ids_a) + seen.count(ids_b) == len(rec.grads)
    assert max(norm for _, norm in rec.grads) <= 1e-3 * (1 + 1e-4)


def test_user_lr_scheduler_drives_both_networks_and_replaces_the_cosine(data):
    X, Y = data
    sched = LRScheduler(StepLR, step_size=1, gamma=0.5)
    clf = CoRegClassifier(max_epochs=3, lr=0.1, callbacks=[("steps", sched)],
                          **COREG).fit(X, Y)
    assert clf.history_[:, "event_lr"] == [0.1, 0.05, 0.025]
    assert "lr" not in clf.history_[-1]  # the built-in schedule stood aside
    assert [g["lr"] for g in clf.optimizer_.param_groups] == [0.0125, 0.0125]


class CountingBar(ProgressBar):
    def initialize(self):
        self.seen = []
        return super().initialize()

    def on_epoch_end(self, net, **kwargs):
        self.seen.append((self.pbar_.total, self.pbar_.n))
        super().on_epoch_end(net, **kwargs)


@pytest.mark.parametrize("cls, kw", [(CoRegClassifier, COREG), (CCClassifier, FAST)])
def test_progress_bar_total_is_the_number_of_batches_run(data, cls, kw):
    X, Y = data
    bar = CountingBar()
    clf = cls(max_epochs=3, validation_fraction=0.2, callbacks=[("bar", bar)],
              **kw).fit(X, Y)
    assert len(bar.seen) == 3
    for (total, done), row in zip(bar.seen, clf.history_):
        assert total == done == row["train_batch_count"] + math.ceil(15 / 16)


def test_checkpoint_on_best_validation_score_fires(data, tmp_path):
    X, Y = data
    cp = Checkpoint(monitor="valid_covering_rate_best", dirname=str(tmp_path),
                    f_params=None, f_optimizer=None, f_criterion=None)
    clf = CoRegClassifier(max_epochs=3, validation_fraction=0.25, callbacks=[("cp", cp)],
                          **COREG).fit(X, Y)
    scores = clf.history_[:, "valid_covering_rate"]
    best = [s > max(scores[:i], default=-1) for i, s in enumerate(scores)]
    assert clf.history_[:, "valid_covering_rate_best"] == best
    assert clf.history_[:, "event_cp"] == best
    assert (tmp_path / "history.json").exists()


def _cosine(e, total, lr=0.01):
    lr_min = lr * 1e-3
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * e / total)) / 2


def test_partial_fit_trains_one_epoch_per_call_on_the_same_schedule(data):
    X, Y = data
    full = CCClassifier(max_epochs=4, **FAST).fit(X, Y)
    stepwise = CCClassifier(max_epochs=4, **FAST)
    for epoch in range(4):
        stepwise.partial_fit(X, Y)
        assert len(stepwise.history_) == epoch + 1
    np.testing.assert_allclose(stepwise.history_[:, "lr"], [_cosine(e, 4) for e in range(4)])
    assert stepwise.history_[:, "lr"] == full.history_[:, "lr"]
    stepwise.partial_fit(X, Y)  # past max_epochs: one more epoch at the final rate
    assert len(stepwise.history_) == 5
    assert stepwise.history_[-1, "lr"] == pytest.approx(0.01e-3)


def test_raising_max_epochs_continues_the_schedule_without_a_jump(data):
    X, Y = data
    clf = CoRegClassifier(max_epochs=4, warm_start=True, **COREG).fit(X, Y)
    first = clf.history_[:, "lr"]
    clf.set_params(max_epochs=8).fit(X, Y)
    lrs = clf.history_[:, "lr"]
    assert len(lrs) == 8 and lrs[:4] == first
    np.testing.assert_allclose(first, [_cosine(e, 4) for e in range(4)])
    assert all(b < a for a, b in zip(lrs, lrs[1:]))  # no jump back up
    # epochs 4..7 follow the cosine from epoch 3's rate to the minimum at 8
    lr_min = 0.01e-3
    expected = [lr_min + (first[3] - lr_min) * (1 + math.cos(math.pi * (e - 3) / 5)) / 2
                for e in range(4, 8)]
    np.testing.assert_allclose(lrs[4:], expected)
    with pytest.warns(UserWarning, match="nothing to do"):
        clf.fit(X, Y)
    assert len(clf.history_) == 8


# ----------------------------------------------------------- the skorch face
def test_repr_is_scikit_learns_with_changed_parameters_only():
    assert repr(CoRegClassifier()) == "CoRegClassifier()"
    assert repr(CCClassifier(max_epochs=3, module__hidden_sizes=(8,))) == \
        "CCClassifier(max_epochs=3, module__hidden_sizes=(8,))"


def test_get_params_does_not_validate():
    assert CoRegClassifier(verbose="x").get_params()["verbose"] == "x"


@pytest.fixture(scope="module")
def fitted_cc(data):
    X, Y = data
    return CCClassifier(max_epochs=2, **FAST).fit(X, Y)


def test_forward_and_infer_give_the_logits_of_predict_proba(data, fitted_cc):
    X, _ = data
    logits = fitted_cc.forward(X)
    assert logits.shape == (len(X), 3)
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), fitted_cc.predict_proba(X),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted_cc.infer(torch.as_tensor(X[:5])).numpy(),
                               logits[:5].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match="training"):
        fitted_cc.forward(X, training=True)


@pytest.mark.parametrize("method, args", [
    ("get_iterator", (None,)), ("get_dataset", (None,)), ("get_split_datasets", (None,)),
    ("train_step", (None,)), ("train_step_single", (None,)),
    ("get_train_step_accumulator", ()), ("validation_step", (None,)),
    ("evaluation_step", (None,)), ("run_single_epoch", (None, True, "train", None)),
    ("get_loss", (None, None)), ("check_data", (None,))])
def test_skorch_training_machinery_raises_with_a_reason(fitted_cc, method, args):
    with pytest.raises(NotImplementedError, match=f"{method} is skorch's per-batch"):
        getattr(fitted_cc, method)(*args)


def test_other_inherited_methods_work(data, fitted_cc):
    X, _ = data
    params = [p for _, p in fitted_cc.get_all_learnable_params()]
    assert {id(p) for p in params} == {id(p) for p in fitted_cc.module_.parameters()}
    fitted_cc.check_is_fitted()
    assert "sample_weight" in fitted_cc.get_metadata_routing().score.requests


def test_grid_search_with_groups_under_metadata_routing(data):
    import sklearn
    from sklearn.model_selection import GridSearchCV, GroupKFold

    X, Y = data
    groups = np.arange(len(X)) % 3
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(CCClassifier(max_epochs=1, **FAST), {"lr": [0.01, 0.1]},
                              cv=GroupKFold(3), error_score="raise").fit(X, Y, groups=groups)
    assert len(search.cv_results_["params"]) == 2


def test_set_params_module_after_fit_reinitialises_networks_and_optimizer(data):
    X, Y = data
    clf = CoRegClassifier(max_epochs=1, **COREG).fit(X, Y)
    clf.set_params(module__hidden_sizes=(4,))
    for net, group in zip((clf.module_, clf.module2_), clf.optimizer_.param_groups):
        assert net.out_features == 4
        assert {id(p) for p in group["params"]} == {
            id(p) for p in net.parameters() if p.requires_grad}
    assert clf.fit(X, Y).predict(X).shape == (len(X),)


def test_load_params_into_a_fresh_estimator(data, tmp_path):
    X, Y = data
    clf = CoRegClassifier(max_epochs=2, **COREG).fit(X, Y)
    files = {"f_params": tmp_path / "a.pt", "f_module2": tmp_path / "b.pt",
             "f_fitted": tmp_path / "fitted.json"}
    clf.save_params(**files)
    fresh = CoRegClassifier(**COREG)
    fresh.load_params(**files)
    np.testing.assert_allclose(fresh.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    assert list(fresh.classes_) == list(clf.classes_)
    with pytest.raises(Exception, match="f_fitted"):
        CoRegClassifier(**COREG).load_params(f_params=files["f_params"])


def test_string_scoring_in_a_scoring_callback_is_refused_with_advice(data):
    X, Y = data
    clf = CCClassifier(max_epochs=1, validation_fraction=0.25,
                       callbacks=[("acc", EpochScoring("accuracy"))], **FAST)
    with pytest.raises(ValueError, match="covering_rate_scorer"):
        clf.fit(X, Y)

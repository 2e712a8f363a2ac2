"""The teacher's scores through the Pipeline, the peers a user would try
instead of Co-Reg (distillation of the teacher's probabilities or of its
top-1 with label smoothing), and the teacher-aware Co-Reg options."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.pipeline import Pipeline

from sklearn_npll import (AnnotatedImages, CoRegClassifier, DistillationClassifier,
                          make_partial_labels)
from sklearn_npll._methods import label_math as lm
from sklearn_npll._methods.coreg import CoRegTrainer
from sklearn_npll._methods.distillation import (distillation_targets,
                                                soft_target_cross_entropy)

FAST = dict(max_epochs=4, batch_size=16, lr=0.05, random_state=0)
COREG = dict(max_epochs=5, warmup_epochs=2, start_contrastive=0, batch_size=16,
             queue_size=64, proj_dim=8, random_state=0)


def blobs(n=120, seed=0):
    rng = np.random.RandomState(seed)
    y = np.arange(n) % 3
    X = (rng.normal(0, 1, (n, 5)) + 2.5 * np.eye(3, 5)[y]).astype("float32")
    return X, y


def teacher(y, right=0.6, seed=0):
    """Probabilities that favour the true class by ``right`` (rows sum to 1)."""
    rng = np.random.RandomState(seed)
    P = rng.dirichlet(np.ones(3), size=len(y)) * (1 - right)
    P[np.arange(len(y)), y] += right
    return P


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# ------------------------------------------------------------ loss and targets
def test_soft_targets_at_a_temperature_are_the_tempered_teacher():
    P = torch.tensor([[0.7, 0.2, 0.1]])
    t = distillation_targets(P, temperature=2.0)
    expected = P ** 0.5 / (P ** 0.5).sum()
    torch.testing.assert_close(t, expected)
    smoothed = distillation_targets(P, targets="top1", label_smoothing=0.3)
    torch.testing.assert_close(smoothed, torch.tensor([[0.8, 0.1, 0.1]]))


def test_soft_target_cross_entropy_scales_with_the_squared_temperature():
    logits = torch.tensor([[1.0, -0.5, 0.2]], requires_grad=True)
    t = torch.tensor([[0.6, 0.3, 0.1]])
    loss = soft_target_cross_entropy(logits, t, temperature=3.0)
    manual = -(t * torch.log_softmax(logits / 3.0, 1)).sum() * 9.0
    torch.testing.assert_close(loss, manual)
    loss.backward()
    # d/dz of T^2 CE(t, softmax(z/T)) = T (softmax(z/T) - t)
    torch.testing.assert_close(logits.grad, 3.0 * (torch.softmax(logits / 3.0, 1) - t))


# ---------------------------------------------------------------- estimator
def test_distillation_learns_the_teachers_probabilities():
    X, y = blobs()
    P = teacher(y)
    clf = DistillationClassifier(temperature=2.0, **FAST).fit(X, P)
    np.testing.assert_allclose(clf.label_distribution_,
                               distillation_targets(torch.as_tensor(P, dtype=torch.float32),
                                                    temperature=2.0).numpy(), rtol=1e-5)
    assert (clf.predict(X) == y).mean() > 0.9
    top1 = DistillationClassifier(targets="top1", label_smoothing=0.1, **FAST).fit(X, P)
    assert np.allclose(top1.label_distribution_.max(1), 0.9 + 0.1 / 3)


def test_distillation_classes_from_a_dataframe_and_refused_targets():
    X, y = blobs()
    P = pd.DataFrame(teacher(y), columns=["cat", "dog", "fox"])
    clf = DistillationClassifier(**FAST).fit(X, P)
    assert list(clf.classes_) == ["cat", "dog", "fox"]
    assert set(clf.predict(X)) <= {"cat", "dog", "fox"}
    with pytest.raises(ValueError, match=r"sum to 1; rows \[0, 1, 2"):
        DistillationClassifier(**FAST).fit(X, np.ones((len(X), 3)))
    with pytest.raises(ValueError, match="non-negative"):
        DistillationClassifier(**FAST).fit(X, -teacher(y))
    with pytest.raises(ValueError, match="teacher's class probabilities"):
        DistillationClassifier(**FAST).fit(X)


def test_distillation_after_an_annotation_learns_its_proba():
    X, y = blobs()
    P = teacher(y)
    annotated = AnnotatedImages(X, candidates=np.eye(3, dtype=int)[P.argmax(1)],
                                classes=["a", "b", "c"], proba=P)
    clf = DistillationClassifier(**FAST).fit(annotated)
    assert list(clf.classes_) == ["a", "b", "c"]
    np.testing.assert_allclose(clf.label_distribution_, P, rtol=1e-5)
    clf.set_params(max_epochs=6, warm_start=True).fit(annotated)
    assert len(clf.history) == 6
    clf.partial_fit(annotated)
    assert len(clf.history) == 7


def test_distillation_in_a_pipeline_after_the_annotator(tmp_path):
    pytest.importorskip("open_clip")
    from _common import TINY_CLIP_NAME, save_tiny_clip

    from sklearn_npll import VLMPartialAnnotator

    images = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    annotator = VLMPartialAnnotator(["cat", "dog", "car"], model_name=TINY_CLIP_NAME,
                                    pretrained=save_tiny_clip(tmp_path), device="cpu")
    pipe = Pipeline([("annotate", annotator),
                     ("student", DistillationClassifier(max_epochs=2, batch_size=8,
                                                        random_state=0))])
    pipe.fit(images)
    proba = annotator.proba_
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(proba, annotator.predict_proba(images), rtol=1e-5)
    np.testing.assert_allclose(pipe[-1].label_distribution_, proba, rtol=1e-5)
    assert set(pipe.predict(images)) <= {"cat", "dog", "car"}


# ------------------------------------------------------- teacher-aware Co-Reg
def test_apply_prior():
    p = torch.tensor([[0.5, 0.25, 0.25]])
    prior = torch.tensor([[0.2, 0.2, 0.6]])
    torch.testing.assert_close(lm.apply_prior(p, prior, 0.0), p)
    torch.testing.assert_close(lm.apply_prior(p, prior, 1.0),
                               torch.tensor([[0.1, 0.05, 0.15]]) / 0.3)


def test_teacher_options_off_change_nothing():
    X, y = blobs()
    Y = make_partial_labels(y, 0.3, 0.3, random_state=0)
    plain = CoRegClassifier(**COREG).fit(X, Y)
    given = CoRegClassifier(**COREG).fit(X, Y, teacher_proba=teacher(y))
    np.testing.assert_array_equal(plain.predict_proba(X), given.predict_proba(X))


def test_teacher_warmup_learns_the_teacher_within_the_sets(monkeypatch):
    X, y = blobs()
    Y = make_partial_labels(y, 0.3, 0.3, random_state=0)
    P = teacher(y)
    seen = []
    original = lm.mixed_cross_entropy

    def spy(logits, targets):
        seen.append(targets.detach().clone())
        return original(logits, targets)

    monkeypatch.setattr(lm, "mixed_cross_entropy", spy)
    clf = CoRegClassifier(teacher_warmup=True, max_epochs=1, warmup_epochs=1, batch_size=16,
                          random_state=0).fit(X, Y, teacher_proba=P)
    assert "loss_teacher" in clf.history[0] and "loss_pce" not in clf.history[0]
    targets = torch.cat(seen).numpy()
    inside = (Y * P) / (Y * P).sum(1, keepdims=True)
    # every warm-up target is one sample's teacher distribution within its set
    assert all(np.isclose(inside, t, atol=1e-6).all(1).any() for t in targets)


def test_teacher_prior_enters_the_pseudo_labels(monkeypatch):
    X, y = blobs()
    Y = make_partial_labels(y, 0.3, 0.3, random_state=0)
    P = teacher(y)
    calls = []
    original = lm.apply_prior

    def spy(p, prior, beta=1.0):
        calls.append((p.shape, beta))
        return original(p, prior, beta)

    monkeypatch.setattr(lm, "apply_prior", spy)
    with_prior = CoRegClassifier(teacher_prior=2.0, **COREG).fit(X, Y, teacher_proba=P)
    assert calls and all(beta == 2.0 for _, beta in calls)
    plain = CoRegClassifier(**COREG).fit(X, Y)
    assert not np.array_equal(with_prior.predict_proba(X), plain.predict_proba(X))


def test_teacher_options_need_the_teachers_probabilities():
    X, y = blobs()
    Y = make_partial_labels(y, 0.3, 0.3, random_state=0)
    with pytest.raises(ValueError, match="teacher_proba"):
        CoRegClassifier(teacher_prior=1.0, **COREG).fit(X, Y)
    annotated = AnnotatedImages(X, candidates=Y, classes=[0, 1, 2], proba=teacher(y))
    seen = []
    original = CoRegTrainer.__init__

    def init(self, est, ctx):
        original(self, est, ctx)
        seen.append(self.teacher)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(CoRegTrainer, "__init__", init)
        CoRegClassifier(teacher_prior=1.0, **COREG).fit(annotated)
    np.testing.assert_allclose(seen[0].numpy(), annotated.proba, rtol=1e-6)


def test_threshold_rule_and_proba_of_the_annotation(tmp_path):
    pytest.importorskip("open_clip")
    from _common import TINY_CLIP_NAME, save_tiny_clip

    from sklearn_npll import VLMPartialAnnotator

    images = np.random.default_rng(1).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    annotator = VLMPartialAnnotator(["cat", "dog", "car", "ship"], model_name=TINY_CLIP_NAME,
                                    pretrained=save_tiny_clip(tmp_path), device="cpu",
                                    mode="threshold", threshold=0.26).fit()
    out = annotator.transform(images)
    P = out.proba
    np.testing.assert_allclose(P, annotator.predict_proba(images), rtol=1e-5)
    expected = (P >= 0.26) | (P == P.max(1, keepdims=True))
    np.testing.assert_array_equal(out.candidates, expected.astype(np.uint8))
    assert 1 < out.candidates.sum(1).max() and out.candidates.sum(1).min() >= 1
    np.testing.assert_array_equal(out[[3, 1]].proba, P[[3, 1]])

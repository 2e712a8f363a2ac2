"""The label-free pipeline: VLMPartialAnnotator -> CoRegClassifier, with no
true label anywhere, and model selection over it."""

import numpy as np
import open_clip
import pytest
from sklearn.model_selection import GridSearchCV

from _common import TINY_CLIP_NAME, record_batch_sizes, save_tiny_clip
from sklearn.pipeline import Pipeline
from sklearn_npll import CoRegClassifier
from sklearn_npll._nn.backbones import SmallCNN
from sklearn_npll.annotate import VLMPartialAnnotator

CLASSES = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def image_tower_calls(monkeypatch):
    """Images seen by any open_clip model's image tower (all instances, clones too)."""
    return record_batch_sizes(open_clip.CLIP, "encode_image", monkeypatch.setattr)


def pipeline(checkpoint, **annotator_params):
    annotator = VLMPartialAnnotator(CLASSES, model_name=TINY_CLIP_NAME, pretrained=checkpoint, k=2,
                                    **annotator_params)
    coreg = CoRegClassifier(SmallCNN, module__in_channels=3, module__width=8, max_epochs=2,
                            warmup_epochs=1, start_contrastive=0, batch_size=8, queue_size=32,
                            proj_dim=8, random_state=0)
    return Pipeline([("annotate", annotator), ("coreg", coreg)])


def test_label_free_fit_predict_score(checkpoint, images, image_tower_calls):
    pipe = pipeline(checkpoint).fit(images)               # no labels anywhere
    assert sum(image_tower_calls) == len(images)
    assert list(pipe.classes_) == CLASSES
    new = images[:6][:, ::-1].copy()
    image_tower_calls.clear()
    predicted = pipe.predict(new)
    assert set(predicted) <= set(CLASSES) and len(predicted) == 6
    assert image_tower_calls == []                        # predicting needs no VLM
    covering = pipe.score(images)                         # against the VLM's sets
    assert 0 <= covering <= 1
    candidates = pipe["annotate"].annotate(images)
    expected = candidates[np.arange(len(images)),
                          np.searchsorted(CLASSES, pipe.predict(images))].mean()
    assert covering == pytest.approx(expected)
    truth = np.array(CLASSES)[np.arange(len(images)) % 3]
    assert pipe.score(images, truth) == pytest.approx(np.mean(pipe.predict(images) == truth))


def test_grid_search_over_the_pipeline_encodes_each_image_once(checkpoint, images, tmp_path,
                                                                image_tower_calls):
    search = GridSearchCV(pipeline(checkpoint, cache_dir=str(tmp_path)),
                          {"annotate__mode": ["multi_prompt", "prob_ratio"],
                           "coreg__lr": [0.01, 0.05]},
                          cv=2, error_score="raise")
    search.fit(images)
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    # 4 candidates x 2 folds + the refit: every image through the image tower once
    assert sum(image_tower_calls) == len(images)
    assert search.predict(images[:3]).shape == (3,)


def test_covering_rate_scorer_cross_validates_the_label_free_pipeline(checkpoint, images):
    from sklearn.model_selection import cross_val_score

    from sklearn_npll.metrics import covering_rate_scorer

    scores = cross_val_score(pipeline(checkpoint), images, cv=2,
                             scoring=covering_rate_scorer, error_score="raise")
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    # the same figure as the pipeline's own label-free score
    pipe = pipeline(checkpoint).fit(images[12:])
    assert covering_rate_scorer(pipe, images[:12]) == pytest.approx(pipe.score(images[:12]))

"""The annotator's output container: set_output accepts the default one
only (AnnotatedImages carries the images the next step needs), and
get_feature_names_out names the candidate columns."""

import numpy as np
import pytest
import sklearn
from sklearn.pipeline import Pipeline

pytest.importorskip("open_clip")

from _common import TINY_CLIP_NAME, save_tiny_clip  # noqa: E402
from sklearn_npll import AnnotatedImages, CCClassifier  # noqa: E402
from sklearn_npll.annotate import VLMPartialAnnotator  # noqa: E402

CLASSES = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)


def annotator(checkpoint):
    return VLMPartialAnnotator(CLASSES, model_name=TINY_CLIP_NAME, pretrained=checkpoint, k=2)


def pipeline(checkpoint):
    return Pipeline([("annotate", annotator(checkpoint)),
                     ("clf", CCClassifier(max_epochs=1, batch_size=8, random_state=0))])


def test_set_output_default_is_the_container_transform_returns(checkpoint, images):
    ann = annotator(checkpoint)
    assert ann.set_output(transform="default") is ann
    assert ann.set_output() is ann
    assert isinstance(ann.fit_transform(images), AnnotatedImages)


@pytest.mark.parametrize("container", ["pandas", "polars"])
def test_set_output_to_a_table_is_refused_naming_the_images(checkpoint, container):
    with pytest.raises(ValueError, match=rf"set_output\(transform='{container}'\) is not "
                                         r"supported.*drop the images"):
        annotator(checkpoint).set_output(transform=container)
    with pytest.raises(ValueError, match="drop the images"):
        pipeline(checkpoint).set_output(transform=container)


def test_pipeline_set_output_default_fits_and_predicts(checkpoint, images):
    pipe = pipeline(checkpoint).set_output(transform="default").fit(images)
    assert set(pipe.predict(images[:3])) <= set(CLASSES)


def test_feature_names_out_are_the_class_names_of_the_candidate_columns(checkpoint, images):
    ann = annotator(checkpoint)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        ann.get_feature_names_out()
    names = ann.fit(images).get_feature_names_out()
    assert names.dtype == object and names.tolist() == CLASSES
    assert ann.transform(images).classes.tolist() == names.tolist()
    pipe = pipeline(checkpoint).fit(images)
    assert pipe[:-1].get_feature_names_out().tolist() == CLASSES


def test_the_global_pandas_output_does_not_change_the_container(checkpoint, images):
    ann = annotator(checkpoint).fit(images)
    with sklearn.config_context(transform_output="pandas"):
        assert isinstance(ann.transform(images), AnnotatedImages)


def test_the_label_free_pipeline_cross_validates_with_the_candidate_splitter(checkpoint, images):
    from sklearn.model_selection import cross_val_score

    from sklearn_npll.metrics import covering_rate_scorer
    from sklearn_npll.model_selection import CandidateSetKFold

    # raw images carry no sets: the folds are a shuffled KFold, and each
    # fold's score reads the sets its fitted annotator makes
    scores = cross_val_score(pipeline(checkpoint), images, cv=CandidateSetKFold(2, random_state=0),
                             scoring=covering_rate_scorer, error_score="raise")
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)


# ------------------------------------------------------------ the table
def test_the_table_of_annotator_output_cases_is_current(checkpoint, images):
    from _table import check_section, outcome

    def fitted_pipeline(container):
        def action():
            pipe = pipeline(checkpoint).set_output(transform=container).fit(images)
            return f"fits, predicts {pipe.predict(images[:3]).shape}"
        return action

    def under_global_pandas():
        with sklearn.config_context(transform_output="pandas"):
            return type(annotator(checkpoint).fit_transform(images)).__name__

    cases = [
        ("Pipeline([annotator, classifier]).set_output(transform='default')",
         fitted_pipeline("default")),
        ("Pipeline([annotator, classifier]).set_output(transform='pandas')",
         fitted_pipeline("pandas")),
        ("annotator.set_output(transform='polars')",
         lambda: annotator(checkpoint).set_output(transform="polars")),
        ("fitted annotator: get_feature_names_out()",
         lambda: str(annotator(checkpoint).fit(images).get_feature_names_out().tolist())),
        ("set_config(transform_output='pandas'), then fit_transform", under_global_pandas),
    ]
    check_section("annotator output", [(name, outcome(action)) for name, action in cases])

"""Tests of VLMPartialAnnotator with a tiny open_clip model (random weights, no download)."""

import ast
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

open_clip = pytest.importorskip("open_clip")

from _common import TINY_CLIP_NAME, record_batch_sizes, save_tiny_clip  # noqa: E402
from sklearn_npll._data.annotated import AnnotatedImages  # noqa: E402
from sklearn_npll.annotate import SMALL_TEMPLATES, VLMPartialAnnotator  # noqa: E402

CLASSES = ["cat", "dog", "car", "plane", "ship", "frog"]
TINY_NAME = TINY_CLIP_NAME


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """Register a tiny architecture and save random weights as a user's checkpoint."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)


def make(checkpoint, **params):
    """An annotator loading the checkpoint file, as a user would."""
    params = {"model_name": TINY_NAME, "pretrained": checkpoint, "batch_size": 64, **params}
    return VLMPartialAnnotator(CLASSES, **params)


@pytest.fixture(scope="module")
def parts(tiny_checkpoint):
    """The same model built by hand: (model, preprocess, tokenizer)."""
    model, _, preprocess = open_clip.create_model_and_transforms(
        TINY_NAME, pretrained=tiny_checkpoint
    )
    return model, preprocess, open_clip.get_tokenizer(TINY_NAME)


def make_injected(parts, **params):
    """A cheap annotator around the injected model (no loading in fit)."""
    model, preprocess, tokenizer = parts
    params = {"model": model, "preprocess": preprocess, "tokenizer": tokenizer,
              "batch_size": 64, **params}
    return VLMPartialAnnotator(CLASSES, **params)


@pytest.fixture(scope="module")
def fitted(tiny_checkpoint):
    return make(tiny_checkpoint).fit()


def test_fit_transform_from_checkpoint(tiny_checkpoint, images):
    annotator = make(tiny_checkpoint)
    out = annotator.fit_transform(images)
    n, C = len(images), len(CLASSES)
    assert isinstance(out, AnnotatedImages)
    assert out.images is images
    assert out.candidates.shape == (n, C) and out.candidates.dtype == np.uint8
    assert out.votes.shape == (n, len(SMALL_TEMPLATES))
    assert list(out.classes) == CLASSES and list(annotator.classes_) == CLASSES
    assert out.candidates.sum(axis=1).min() >= 1
    assert annotator.text_features_.shape == (len(SMALL_TEMPLATES), C, 32)
    assert np.allclose(np.linalg.norm(annotator.text_features_, axis=-1), 1, atol=1e-5)
    assert annotator.logit_bias_ is None
    assert annotator.logit_scale_ == pytest.approx(
        float(annotator.model_.logit_scale.detach().exp()), rel=1e-6
    )
    assert annotator.candidate_stats_["n_samples"] == n
    assert annotator.candidate_stats_["mean_size"] == pytest.approx(
        out.candidates.sum(axis=1).mean()
    )
    np.testing.assert_array_equal(annotator.votes_, out.votes)
    # what the annotator returns can be split like any sklearn input
    assert len(out[np.arange(5)]) == 5


def test_multi_prompt_sets_are_union_of_votes(fitted, images):
    Y = fitted.annotate(images)
    expected = np.zeros_like(Y)
    for i, row in enumerate(fitted.votes_):
        expected[i, row] = 1
    np.testing.assert_array_equal(Y, expected)


def test_topk_sets_have_size_k(parts, fitted, images):
    top1 = np.argmax(fitted.predict_proba(images), axis=1)
    for k in (1, 3):
        Y = make_injected(parts, mode="topk", k=k).fit().annotate(images)
        assert (Y.sum(axis=1) == k).all()
        assert Y[np.arange(len(Y)), top1].all()


def test_prob_ratio_rule(parts, fitted, images):
    annotator = make_injected(parts, mode="prob_ratio", k=4, ratio=0.9).fit()
    Y = annotator.annotate(images)
    proba = fitted.predict_proba(images)
    sizes = Y.sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= 4
    for row, p in zip(Y, proba):
        top = np.argsort(-p, kind="stable")[:4]
        kept = top[p[top] >= 0.9 * p.max()]
        assert set(np.flatnonzero(row)) == set(kept)
    strict = make_injected(parts, mode="prob_ratio", ratio=1.0).fit().annotate(images)
    assert (strict.sum(axis=1) == 1).all()


def test_predict_matches_argmax_of_predict_proba(fitted, images):
    proba = fitted.predict_proba(images)
    assert proba.shape == (len(images), len(CLASSES))
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(
        fitted.predict(images), np.asarray(CLASSES)[proba.argmax(axis=1)]
    )


def test_second_transform_and_disk_cache_skip_image_tower(tiny_checkpoint, images, tmp_path):
    first = make(tiny_checkpoint, cache_dir=tmp_path).fit()
    calls = record_batch_sizes(first.model_, "encode_image")
    out1 = first.transform(images)
    assert calls == []  # deferred until the candidates are read
    out1.candidates
    assert sum(calls) == len(images)
    calls.clear()
    out2 = first.transform(images)
    out2.candidates
    assert calls == []
    np.testing.assert_array_equal(out1.candidates, out2.candidates)

    # a clone (as in every fold of a grid search) reads the shared disk cache
    second = clone(first).fit()
    calls = record_batch_sizes(second.model_, "encode_image")
    out3 = second.transform(images[::-1])
    out3.candidates
    assert calls == []
    np.testing.assert_array_equal(out3.candidates, out1.candidates[::-1])
    np.testing.assert_allclose(
        second.predict_proba(images), first.predict_proba(images), rtol=1e-6
    )
    # only new images reach the model, duplicates once
    new = np.concatenate([images[:3], 255 - images[:2], 255 - images[:2]])
    second.transform(new).candidates
    assert sum(calls) == 2

    # an unreadable shard (e.g. from a crashed writer) is skipped
    (model_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (model_dir / "model.json").is_file()
    (model_dir / "broken.npz").write_bytes(b"garbage")
    third = clone(first).fit()
    calls = record_batch_sizes(third.model_, "encode_image")
    np.testing.assert_array_equal(third.transform(images).candidates, out1.candidates)
    assert calls == []


def test_injected_model_matches_checkpoint_route(parts, fitted, images):
    model = parts[0]
    annotator = make_injected(parts).fit()
    assert annotator.model_ is model
    np.testing.assert_allclose(annotator.text_features_, fitted.text_features_, atol=1e-5)
    np.testing.assert_allclose(
        annotator.predict_proba(images), fitted.predict_proba(images), atol=1e-5
    )
    # preprocess from the model's own config, tokenizer from model_name
    bare = VLMPartialAnnotator(CLASSES, model_name=TINY_NAME, model=model).fit()
    np.testing.assert_allclose(
        bare.predict_proba(images[:4]), fitted.predict_proba(images[:4]), atol=1e-5
    )


def test_grey_float_pil_and_path_inputs(fitted, images, tmp_path):
    grey = images[..., 0]
    Y_grey = fitted.annotate(grey)
    assert Y_grey.shape == (len(images), len(CLASSES))
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    np.testing.assert_array_equal(fitted.annotate(rgb), Y_grey)
    np.testing.assert_array_equal(
        fitted.annotate(images.astype(np.float32) / 255), fitted.annotate(images)
    )
    # PIL images and files, of mixed sizes
    pil = [Image.fromarray(images[0]), Image.fromarray(grey[1]),
           Image.fromarray(np.zeros((50, 20, 3), np.uint8))]
    assert fitted.annotate(pil).shape == (3, len(CLASSES))
    paths = []
    for i, im in enumerate(pil):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    np.testing.assert_array_equal(fitted.annotate(paths), fitted.annotate(pil))
    np.testing.assert_array_equal(fitted.annotate([str(p) for p in paths])[:1],
                                  fitted.annotate(images[:1]))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        fitted.annotate([paths[0], bad])
    with pytest.raises(ValueError, match="images"):
        fitted.annotate(np.zeros((4, 7), dtype=np.float32))


def test_transform_of_annotated_images_uses_its_images(fitted, images):
    annotated = fitted.transform(images[:5])
    again = fitted.transform(annotated)
    assert again.images is annotated.images
    np.testing.assert_array_equal(again.candidates, annotated.candidates)


def test_templates_and_synonyms(parts, fitted, images):
    imagenet = make_injected(parts, templates="imagenet", batch_size=512).fit()
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    assert len(imagenet.templates_) == len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert imagenet.transform(images[:3]).votes.shape == (3, 80)

    custom = make_injected(parts, templates=["a photo of a {}", lambda c: f"art of a {c}"]).fit()
    assert custom.templates_[0] == "a photo of a {}" and callable(custom.templates_[1])
    np.testing.assert_allclose(custom.text_features_[0], fitted.text_features_[0], atol=1e-6)

    syn = make_injected(parts, synonyms={"car": ["automobile", "motorcar"]}).fit()
    same = [i for i, c in enumerate(CLASSES) if c != "car"]
    np.testing.assert_allclose(
        syn.text_features_[:, same], fitted.text_features_[:, same], atol=1e-6
    )
    assert not np.allclose(syn.text_features_[:, 2], fitted.text_features_[:, 2])


def test_parameter_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(InvalidParameterError):
        make(tiny_checkpoint, mode="vote").fit()
    with pytest.raises(ValueError, match=r"templates\[1\]"):
        make(tiny_checkpoint, templates=["a {}", "no placeholder"]).fit()
    with pytest.raises(ValueError, match="k=7"):
        make(tiny_checkpoint, mode="topk", k=7).fit()
    with pytest.raises(ValueError, match="duplicates"):
        VLMPartialAnnotator(["a", "b", "a"], model_name=TINY_NAME, pretrained=tiny_checkpoint).fit()
    with pytest.raises(ValueError, match="not class names"):
        make(tiny_checkpoint, synonyms={"horse": ["pony"]}).fit()
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        make(str(tmp_path / "missing.pt")).fit()
    with pytest.raises(ValueError, match="known tag"):
        VLMPartialAnnotator(CLASSES, pretrained="no-such-tag").fit()
    with pytest.raises(ValueError, match="not an open_clip architecture"):
        VLMPartialAnnotator(CLASSES, model_name="ViT-Q-99").fit()


def test_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    from huggingface_hub import constants

    # nothing cached, hub endpoint on a closed local port: no real network involved
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(OSError, match="pretrained=") as info:
        VLMPartialAnnotator(CLASSES, model_name="ViT-B-32", pretrained="openai").fit()
    assert time.perf_counter() - start < 30
    message = str(info.value)
    assert "cannot be reached" in message and "model=" in message and "checkpoint" in message
    assert constants.HF_HUB_OFFLINE is False


def test_cached_tag_loads_without_network(tiny_checkpoint, images, monkeypatch, tmp_path):
    """A tag whose weights sit in the local hub cache loads with the hub unreachable."""
    import shutil

    from huggingface_hub import constants
    from open_clip import pretrained as registry

    commit = "0" * 40
    repo = tmp_path / "models--npll--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(tiny_checkpoint, repo / "snapshots" / commit / "open_clip_pytorch_model.bin")
    monkeypatch.setitem(registry._PRETRAINED, TINY_NAME, {"tinytag": {"hf_hub": "npll/tiny-clip/"}})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    annotator = VLMPartialAnnotator(CLASSES, model_name=TINY_NAME, pretrained="tinytag").fit()
    reference = make(tiny_checkpoint).fit()
    np.testing.assert_allclose(annotator.text_features_, reference.text_features_, atol=1e-6)


def test_scores_use_model_logit_scale_and_bias(parts, images):
    import copy

    model, preprocess, _ = parts
    sigmoid_model = copy.deepcopy(model)
    sigmoid_model.logit_bias = torch.nn.Parameter(torch.tensor([-3.0]))
    x = torch.stack([preprocess(Image.fromarray(im)) for im in images[:6]])
    with torch.no_grad():
        emb = torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()
    for m, sigmoid in ((model, False), (sigmoid_model, True)):
        templates = ["a photo of a {}", "art of a {}"]
        annotator = make_injected(parts, model=m, templates=templates).fit()
        assert (annotator.logit_bias_ is not None) is sigmoid
        logits = annotator.logit_scale_ * np.einsum("nd,tcd->ntc", emb, annotator.text_features_)
        if sigmoid:
            assert annotator.logit_bias_ == pytest.approx(-3.0)
            per_template = 1 / (1 + np.exp(-(logits - 3.0)))
        else:
            e = np.exp(logits - logits.max(-1, keepdims=True))
            per_template = e / e.sum(-1, keepdims=True)
        avg = per_template.mean(1)
        np.testing.assert_allclose(
            annotator.predict_proba(images[:6]), avg / avg.sum(1, keepdims=True), rtol=1e-4
        )
        annotator.annotate(images[:6])
        np.testing.assert_array_equal(annotator.votes_, logits.argmax(-1))


def test_clone_pickle_and_tags(fitted, images):
    params = clone(fitted).get_params()
    assert params["pretrained"] == fitted.pretrained and params["mode"] == "multi_prompt"
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(
        restored.predict_proba(images), fitted.predict_proba(images), rtol=1e-6
    )
    assert not fitted.__sklearn_tags__().input_tags.two_d_array


def test_verbose_progress(parts, images, capsys):
    make_injected(parts, verbose=True).fit().transform(images[:4]).candidates
    err = capsys.readouterr().err
    assert "Annotating" in err and "templates x 6 classes" in err


@pytest.mark.parametrize("name", ["annotate", "_vlm.hub", "_vlm.cache", "_vlm.images",
                                  "_vlm.report", "_vlm.templates"])
def test_annotator_does_not_import_the_classifier(name):
    import importlib

    module = importlib.import_module(f"sklearn_npll.{name}")
    tree = ast.parse(Path(module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not any(c in name.lower() for name in imported
                   for c in ("coreg", "baselines", "_base"))

"""VLMPartialAnnotator: cache identities, damaged caches, precision, prompts,
reports, pickling and hub handling (tiny open_clip model, random weights)."""

import logging
import pickle
import socket
import sys
import time
import warnings
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone

open_clip = pytest.importorskip("open_clip")

from _common import TINY_CLIP_NAME, record_batch_sizes, save_tiny_clip  # noqa: E402
from sklearn_npll import VLMPartialAnnotator  # noqa: E402
from sklearn_npll._vlm.cache import TEXT_CACHE, model_digests  # noqa: E402

CLASSES = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)


def make(checkpoint, **params):
    params = {"model_name": TINY_CLIP_NAME, "pretrained": checkpoint, "batch_size": 16,
              "n_jobs": 1, **params}
    return VLMPartialAnnotator(params.pop("class_names", CLASSES), **params)


@pytest.fixture
def tower_calls(monkeypatch):
    """Images seen by any open_clip model's image tower."""
    return record_batch_sizes(open_clip.CLIP, "encode_image", monkeypatch.setattr)


@pytest.fixture
def text_calls(monkeypatch):
    """Prompts seen by any open_clip model's text tower; the process cache starts empty."""
    TEXT_CACHE.clear()
    return record_batch_sizes(open_clip.CLIP, "encode_text", monkeypatch.setattr)


# ---------------------------------------------------------------- cache keys


def test_changed_block_outside_any_sample_is_a_cache_miss(checkpoint, images, tmp_path,
                                                          tower_calls):
    """A fine-tuned checkpoint under the same file name never gets old embeddings."""
    path = tmp_path / "model.pt"
    state = torch.load(checkpoint)
    torch.save(state, path)
    old = make(str(path), cache_dir=tmp_path / "cache").fit()
    old.transform(images).candidates
    # change one block in the middle of the image tower only
    block = state["visual.transformer.resblocks.0.mlp.c_proj.weight"]
    block += torch.randn(block.shape, generator=torch.Generator().manual_seed(0))
    torch.save(state, path)
    tower_calls.clear()
    new = make(str(path), cache_dir=tmp_path / "cache").fit()
    assert new.model_key_ != old.model_key_
    proba = new.predict_proba(images)
    assert sum(tower_calls) == len(images)
    reference = make(str(path)).fit().predict_proba(images)
    np.testing.assert_allclose(proba, reference, atol=1e-6)
    assert np.abs(proba - old.predict_proba(images)).max() > 1e-3


def test_model_digest_is_computed_once_and_follows_in_place_changes(checkpoint, monkeypatch):
    import sklearn_npll._vlm.cache as cache

    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=checkpoint)
    hashed = []
    original = cache._hash_tensor
    monkeypatch.setattr(cache, "_hash_tensor",
                        lambda h, name, t: (hashed.append(name), original(h, name, t)))
    first = model_digests(model)
    n_tensors = len(hashed)
    assert n_tensors == len(model.state_dict())
    assert model_digests(model) == first and len(hashed) == n_tensors  # memoised
    with torch.no_grad():
        model.visual.transformer.resblocks[0].mlp.c_proj.weight[0, 0] += 1
    changed = model_digests(model)
    assert changed[0] != first[0] and changed[1] == first[1]


def test_preprocessing_identity(checkpoint, images, tmp_path, tower_calls):
    _, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_NAME)
    _, _, other = open_clip.create_model_and_transforms(TINY_CLIP_NAME, image_mean=(0.5,) * 3)
    same = make(checkpoint, preprocess=preprocess).fit()
    assert same.model_key_ == make(checkpoint).fit().model_key_  # by parameters
    assert make(checkpoint, preprocess=other).fit().model_key_ != same.model_key_

    # two user callables with the same repr: no disk cache without a key
    class Mine:
        def __init__(self, scale):
            self.scale = scale

        def __call__(self, im):
            return preprocess(im) * self.scale

        def __repr__(self):
            return "Mine()"

    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="preprocess_key"):
        a = make(checkpoint, preprocess=Mine(1.0), cache_dir=cache).fit()
    assert a.model_key_ is None
    a.transform(images).candidates
    with pytest.warns(UserWarning, match="preprocess_key"):
        b = make(checkpoint, preprocess=Mine(-1.0), cache_dir=cache).fit()
    tower_calls.clear()
    assert not np.allclose(b.predict_proba(images), a.predict_proba(images), atol=1e-4)
    assert sum(tower_calls) == len(images)  # b encoded its own; a kept its memory cache
    assert not any(p.name.startswith(TINY_CLIP_NAME) for p in cache.glob("*"))
    # a user-given key enables the disk cache, one identity per key
    keyed = [make(checkpoint, preprocess=Mine(s), preprocess_key=f"mine-{s}", cache_dir=cache)
             for s in (1.0, -1.0)]
    for k in keyed:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            k.fit().transform(images).candidates
    assert keyed[0].model_key_ != keyed[1].model_key_
    assert len([p for p in cache.glob(f"{TINY_CLIP_NAME}*") if p.is_dir()]) == 2


def test_cached_files_are_not_decoded_again(checkpoint, images, tmp_path, monkeypatch,
                                            tower_calls):
    paths = []
    for i, im in enumerate(images[:6]):
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(im).save(paths[-1], quality=90)
    first = make(checkpoint, cache_dir=tmp_path / "cache").fit()
    proba = first.predict_proba(paths)
    decoded = []
    original = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: (decoded.append(a), original(*a, **k))[1])
    tower_calls.clear()
    again = clone(first).fit()
    np.testing.assert_allclose(again.predict_proba(paths), proba, atol=1e-6)
    assert decoded == [] and tower_calls == []
    # a different file content is a miss (and decoded), the same name notwithstanding
    Image.fromarray(255 - images[0]).save(paths[0], quality=90)
    again.predict_proba(paths)
    assert len(decoded) == 1 and sum(tower_calls) == 1


@pytest.mark.parametrize("damage", ["truncated", "bitflip", "nan", "width"])
def test_damaged_shard_is_skipped_named_and_encoded_again(checkpoint, images, tmp_path,
                                                          tower_calls, damage):
    cache = tmp_path / "cache"
    reference = make(checkpoint, cache_dir=cache, batch_size=32).fit()
    expected = reference.predict_proba(images)
    (shard,) = cache.glob(f"{TINY_CLIP_NAME}*/*.npz")
    if damage in ("truncated", "bitflip"):
        data = bytearray(shard.read_bytes())
        if damage == "truncated":
            data = data[: len(data) // 2]
        else:
            data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    else:
        with np.load(shard) as f:
            keys, emb = f["keys"], f["embeddings"]
        emb = np.full_like(emb, np.nan) if damage == "nan" else emb[:, :16]
        with open(shard, "wb") as f:
            np.savez(f, keys=keys, embeddings=emb)
    tower_calls.clear()
    fresh = clone(reference).fit()
    with pytest.warns(RuntimeWarning, match=shard.name):
        proba = fresh.predict_proba(images)
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    assert sum(tower_calls) == len(images)
    # encoded again into a good shard: a later run reads it without warnings
    tower_calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(clone(reference).fit().predict_proba(images), expected,
                                   atol=1e-6)
    assert tower_calls == []


def test_injected_model_changed_after_fit_is_refused(checkpoint, images):
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_NAME,
                                                                 pretrained=checkpoint)
    annotator = make(checkpoint, model=model, preprocess=preprocess).fit()
    annotator.annotate(images[:2])
    with torch.no_grad():
        model.visual.ln_post.weight.mul_(2)
    with pytest.raises(RuntimeError, match="call fit again"):
        annotator.annotate(images[:2])


# ----------------------------------------------------------------- precision


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_close_to_fp32_and_cached_apart(checkpoint, images, tmp_path,
                                                      precision):
    fp32 = make(checkpoint, precision="fp32", cache_dir=tmp_path).fit()
    low = make(checkpoint, precision=precision, cache_dir=tmp_path).fit()
    assert low.precision_ == precision and low.model_key_ != fp32.model_key_
    p32, plow = fp32.predict_proba(images), low.predict_proba(images)
    assert not np.array_equal(p32, plow)  # really computed at low precision
    np.testing.assert_allclose(plow, p32, atol=0.05)
    assert make(checkpoint).fit().precision_ == "fp32"  # "auto" on CPU


@pytest.mark.parametrize("created", ["bf16", "fp16"])
def test_models_created_at_low_precision_work(checkpoint, images, created):
    reference = make(checkpoint, precision="fp32").fit().predict_proba(images)
    for precision in ("auto", "bf16"):
        model, _, preprocess = open_clip.create_model_and_transforms(
            TINY_CLIP_NAME, pretrained=checkpoint, precision=created)
        annotator = make(checkpoint, model=model, preprocess=preprocess,
                         precision=precision).fit()
        np.testing.assert_allclose(annotator.predict_proba(images), reference, atol=0.05)


# ------------------------------------------------------------------- prompts


def encode(annotator, prompts):
    tokens = annotator.tokenizer_(prompts)
    with torch.no_grad():
        out = annotator.model_.encode_text(tokens)
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def test_callable_templates_get_the_class_name_and_underscores_read_as_spaces(checkpoint):
    def article(name):
        return f"a photo of {'an' if name[0] in 'aeiou' else 'a'} {name}."

    names = ["apple", "maple_tree"]
    annotator = make(checkpoint, class_names=names, templates=[article, "art of a {}"]).fit()
    assert list(annotator.classes_) == names
    assert annotator.prompt_names_ == ["apple", "maple tree"]
    expected = encode(annotator, ["a photo of an apple.", "a photo of a maple tree."])
    np.testing.assert_allclose(annotator.text_features_[0], expected, atol=1e-5)
    np.testing.assert_allclose(annotator.text_features_[1, 1],
                               encode(annotator, ["art of a maple tree"])[0], atol=1e-5)


def test_named_template_set(checkpoint):
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    annotator = make(checkpoint, templates="imagenet-simple").fit()
    assert annotator.templates_ == [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]
    assert annotator.text_features_.shape[0] == len(SIMPLE_IMAGENET_TEMPLATES)


def test_prompts_encoded_once_across_clones_and_from_disk(checkpoint, tmp_path, text_calls,
                                                          capsys):
    first = make(checkpoint, cache_dir=tmp_path, verbose=True).fit()
    assert "Encoding prompts" in capsys.readouterr().err
    assert sum(text_calls) == 27 * len(CLASSES)
    text_calls.clear()
    for params in ({}, {"mode": "topk", "k": 2}):
        np.testing.assert_array_equal(clone(first).set_params(**params).fit().text_features_,
                                      first.text_features_)
    assert text_calls == []
    # another class list encodes only its new prompts
    make(checkpoint, class_names=["cat", "dog", "frog"]).fit()
    assert sum(text_calls) == 27
    # a new process (empty memory) reads them from the disk cache
    TEXT_CACHE.clear()
    text_calls.clear()
    again = make(checkpoint, cache_dir=tmp_path).fit()
    assert text_calls == []
    np.testing.assert_allclose(again.text_features_, first.text_features_, atol=1e-7)


# -------------------------------------------------------------------- report


def test_candidate_stats_and_report_with_true_labels(checkpoint, images):
    annotator = make(checkpoint)
    y = np.asarray(CLASSES)[np.arange(len(images)) % 3]
    annotated = annotator.fit_transform(images, y)
    Y, votes = annotated.candidates, annotated.votes
    idx = np.arange(len(images)) % 3
    coverage = Y[np.arange(len(Y)), idx].mean()
    assert annotator.candidate_stats_["coverage"] == pytest.approx(coverage)

    report = annotator.annotation_report(annotated, y)
    assert list(report.index) == CLASSES + ["(all)"]
    for c in range(3):
        rows = Y[:, c] == 1
        assert report["in_sets"].iloc[c] == rows.sum()
        if rows.any():
            assert report["mean_set_size"].iloc[c] == pytest.approx(Y[rows].sum(1).mean())
        mine = idx == c
        assert report["coverage"].iloc[c] == pytest.approx(Y[mine, c].mean())
        assert report["noise_rate"].iloc[c] == pytest.approx(1 - Y[mine, c].mean())
        column = f"vote_accuracy[{annotator.templates_[4]}]"
        assert report[column].iloc[c] == pytest.approx((votes[mine, 4] == c).mean())
    assert report["coverage"].iloc[-1] == pytest.approx(coverage)


def test_report_without_pandas_is_a_dict_of_columns(checkpoint, images, monkeypatch):
    annotator = make(checkpoint).fit()
    annotated = annotator.transform(images)
    monkeypatch.setitem(sys.modules, "pandas", None)
    report = annotator.annotation_report(annotated)
    assert isinstance(report, dict)
    assert report["class"] == CLASSES + ["(all)"]
    assert report["in_sets"][:3] == annotated.candidates.sum(0).tolist()
    assert "coverage" not in report


# ------------------------------------------------------------------- pickles


def test_pickle_leaves_the_model_out_and_loads_it_again(checkpoint, images, tmp_path,
                                                        tower_calls, monkeypatch):
    from sklearn_npll._vlm.hub import load_open_clip

    path = tmp_path / "model.pt"
    path.write_bytes(open(checkpoint, "rb").read())
    annotator = make(str(path)).fit()
    expected = annotator.predict_proba(images)
    blob = pickle.dumps(annotator)
    with_model = len(pickle.dumps(annotator.model_))
    assert len(blob) < with_model / 2
    restored = pickle.loads(blob)
    assert not hasattr(restored, "model_")
    tower_calls.clear()
    np.testing.assert_allclose(restored.predict_proba(images), expected, atol=1e-6)
    assert sum(tower_calls) == len(images)  # loaded again and annotated
    # deferred annotations of an unpickled annotator share one reload
    import sklearn_npll.annotate as module

    loads = []
    monkeypatch.setattr(module, "load_open_clip",
                        lambda *a, **k: (loads.append(a), load_open_clip(*a, **k))[1])
    other = pickle.loads(blob)
    for part in (images[:5], images[5:], images):
        other.transform(part).candidates
    assert len(loads) == 1
    # the checkpoint was replaced since fit: refused, not silently mixed
    state = torch.load(path)
    state["visual.ln_post.bias"] += 1
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="call fit again"):
        pickle.loads(blob).predict_proba(images)


def test_deferred_annotation_pickles_and_keeps_its_parameters(checkpoint, images):
    annotator = make(checkpoint).fit()
    deferred = annotator.transform(images)
    reference = make(checkpoint).fit().annotate(images)
    assert reference.sum(1).max() > 1  # multi_prompt sets of several classes
    annotator.set_params(mode="topk", k=1).fit()
    restored = pickle.loads(pickle.dumps(deferred))
    np.testing.assert_array_equal(deferred.candidates, reference)
    np.testing.assert_array_equal(restored.candidates, reference)
    assert (annotator.annotate(images).sum(1) == 1).all()


# ----------------------------------------------------------------------- hub


def test_missing_transformers_names_the_extra(tmp_path, monkeypatch):
    import json

    config = tmp_path / "npll-tiny-hf.json"
    cfg = json.loads(json.dumps(__import__("_common").TINY_CLIP_CONFIG))
    cfg["text_cfg"]["hf_tokenizer_name"] = "some/tokenizer"
    config.write_text(json.dumps(cfg))
    open_clip.add_model_config(config)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"sklearn-npll\[hf\]"):
        VLMPartialAnnotator(CLASSES, model_name="npll-tiny-hf", pretrained=None).fit()


@pytest.mark.parametrize("error, raised, message", [
    (URLError("no route to host"), OSError, r"Could not download .*To work offline"),
    (ImportError("No module named 'transformers'", name="transformers"), ImportError,
     r"sklearn-npll\[hf\]"),
    (ValueError("unrelated"), ValueError, r"^unrelated$"),
])
def test_a_failed_load_explains_a_download_or_a_missing_extra(checkpoint, monkeypatch, error,
                                                              raised, message):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fail)
    with pytest.raises(raised, match=message):
        make(checkpoint).fit()


def test_stalled_hub_fails_within_the_timeout_without_global_state(checkpoint, monkeypatch,
                                                                  tmp_path):
    from huggingface_hub import constants
    from open_clip import pretrained as registry

    # a tag of the tiny model on a repository that does not exist: the download
    # left running after the timeout can only fail, never fetch real weights
    monkeypatch.setitem(registry._PRETRAINED, TINY_CLIP_NAME,
                        {"stalltag": {"hf_hub": "npll-test/no-such-repo/"}})

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # accepts connections (backlog) and never answers
    port = server.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    seen = []
    original = open_clip.create_model_and_transforms

    def spy(*args, **kwargs):
        seen.append((constants.HF_HUB_OFFLINE, list(logging.getLogger().filters)))
        return original(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", spy)
    start = time.perf_counter()
    try:
        with pytest.raises(OSError, match="hub_timeout=2"):
            VLMPartialAnnotator(CLASSES, model_name=TINY_CLIP_NAME, pretrained="stalltag",
                                hub_timeout=2).fit()
    finally:
        server.close()
    assert time.perf_counter() - start < 10
    assert seen and all(state == (False, []) for state in seen)


def test_cached_hub_repository_loads_without_network(checkpoint, images, monkeypatch, tmp_path):
    """An hf-hub: model whose config and weights are in the local hub cache."""
    import json
    import shutil

    from huggingface_hub import constants

    from _common import TINY_CLIP_CONFIG

    commit = "1" * 40
    repo = tmp_path / "models--npll--tiny-repo"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    shutil.copy(checkpoint, snapshot / "open_clip_pytorch_model.bin")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    annotator = VLMPartialAnnotator(CLASSES, model_name="hf-hub:npll/tiny-repo").fit()
    assert time.perf_counter() - start < 30
    reference = make(checkpoint).fit()
    np.testing.assert_allclose(annotator.predict_proba(images), reference.predict_proba(images),
                               atol=1e-6)


class _SetSizes:
    """A final pipeline step that reads the candidate sets it is given."""

    def fit(self, X, y=None):
        self.sizes_ = X.candidates.sum(axis=1)
        return self


def test_pipeline_memory_caches_the_annotation_step(checkpoint, images, tmp_path,
                                                    tower_calls, monkeypatch):
    from sklearn.pipeline import Pipeline

    import sklearn_npll.annotate as module
    from sklearn_npll._vlm.hub import load_open_clip

    loads = []
    monkeypatch.setattr(module, "load_open_clip",
                        lambda *a, **k: (loads.append(a), load_open_clip(*a, **k))[1])
    pipe = Pipeline([("annotate", make(checkpoint)), ("sizes", _SetSizes())],
                    memory=str(tmp_path))
    first = clone(pipe).fit(images).named_steps["sizes"].sizes_
    assert sum(tower_calls) == len(images) and len(loads) == 1
    tower_calls.clear()
    second = clone(pipe).fit(images)
    np.testing.assert_array_equal(second.named_steps["sizes"].sizes_, first)
    assert tower_calls == [] and len(loads) == 1  # from the cache: no model loaded

"""Searches and sharded annotation on local Dask and Ray clusters of 2 worker
processes, through joblib's backends: results equal the sequential ones."""

import contextlib
import os

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

from sklearn_npll import CoRegClassifier, make_partial_labels
from sklearn_npll._vlm.sharding import _WORKER_ANNOTATORS
from sklearn_npll.distributed import RayShared, annotate_sharded, cluster_backend

distributed = pytest.importorskip("distributed", reason="needs the 'dask' extra")
ray = pytest.importorskip("ray", reason="needs the 'ray' extra")
open_clip = pytest.importorskip("open_clip")

from _common import TINY_CLIP_NAME, record_batch_sizes, save_tiny_clip  # noqa: E402

CLASSES = ["cat", "dog", "car", "plane"]


@contextlib.contextmanager
def restored_environ():
    """Put this process's environment back afterwards: a Dask Client sets
    OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS to 1 here, which
    later tests' child processes would inherit, and then compute with other
    thread counts than this process (no longer bit-identical to it)."""
    environ = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)


@pytest.fixture(scope="module")
def dask_client():
    # worker processes, one thread each, as on a real cluster
    with restored_environ(), distributed.Client(n_workers=2, threads_per_worker=1,
                                                processes=True, dashboard_address=None) as client:
        yield client


@pytest.fixture(scope="module")
def ray_local():
    with restored_environ():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(3), 24)
    X = (rng.normal(size=(72, 6)) + 2.0 * np.eye(3, 6)[y]).astype(np.float32)
    Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.1, random_state=0)
    return X, Y


def small_coreg():
    return CoRegClassifier(max_epochs=3, warmup_epochs=1, start_contrastive=0,
                           batch_size=16, queue_size=64, proj_dim=8, random_state=0)


def make_search(kind, n_jobs):
    if kind == "grid":
        return GridSearchCV(small_coreg(), {"lr": [0.01, 0.05]}, cv=2, n_jobs=n_jobs)
    return RandomizedSearchCV(small_coreg(), {"lr": [0.005, 0.01, 0.05], "p_threshold":
                                              [0.3, 0.5, 0.7]},
                              n_iter=2, cv=2, n_jobs=n_jobs, random_state=0)


def assert_same_search(parallel, sequential, X):
    for key in ("params", "split0_test_score", "split1_test_score", "mean_test_score"):
        a, b = parallel.cv_results_[key], sequential.cv_results_[key]
        if key == "params":
            assert a == b
        else:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert parallel.best_params_ == sequential.best_params_
    np.testing.assert_allclose(parallel.best_estimator_.predict_proba(X),
                               sequential.best_estimator_.predict_proba(X), atol=1e-6)


@pytest.fixture(scope="module")
def sequential_searches(data):
    X, Y = data
    return {kind: make_search(kind, n_jobs=None).fit(X, Y) for kind in ("grid", "random")}


@pytest.mark.parametrize("kind", ["grid", "random"])
def test_search_on_dask_equals_sequential(dask_client, data, sequential_searches, kind):
    X, Y = data
    with cluster_backend("dask", scatter=[X, Y]) as (Xs, Ys):
        search = make_search(kind, n_jobs=-1).fit(Xs, Ys)
    assert_same_search(search, sequential_searches[kind], X)
    # the data was scattered once: one copy of each array on the cluster,
    # not one per task
    keys = [k for k, holders in dask_client.who_has().items() if holders]
    assert sum(1 for k in keys if "ndarray" in str(k)) == 2


def test_search_on_ray_equals_sequential(ray_local, data, sequential_searches):
    X, Y = data
    with cluster_backend("ray", scatter=[X, Y]) as (Xs, Ys):
        assert isinstance(Xs, RayShared) and len(Xs) == len(X)
        search = make_search("grid", n_jobs=2).fit(Xs, Ys)
    assert_same_search(search, sequential_searches["grid"], X)


def test_ray_shared_pickles_as_a_reference(ray_local):
    import pickle

    big = np.zeros((1000, 100), dtype=np.float32)
    shared = RayShared(big)
    assert len(pickle.dumps(shared)) < big.nbytes // 100
    np.testing.assert_array_equal(np.asarray(shared), big)
    np.testing.assert_array_equal(shared[[1, 3]], big[[1, 3]])


def test_cluster_backend_rejects_unknown_engine():
    with pytest.raises(ValueError, match="'dask' or 'ray'"):
        with cluster_backend("spark"):
            pass


# ------------------------------------------------------- sharded annotation
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(30):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def annotator_params(tmp_path_factory):
    """A tiny random open_clip model injected into the annotator (it travels
    to the workers with the annotator's parameters)."""
    checkpoint = save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
    model, _, preprocess = open_clip.create_model_and_transforms(
        TINY_CLIP_NAME, pretrained=checkpoint)
    return {"model": model, "preprocess": preprocess,
            "tokenizer": open_clip.get_tokenizer(TINY_CLIP_NAME), "batch_size": 8,
            "n_jobs": 1, "device": "cpu"}


def test_sharded_annotation_on_dask_equals_single_process(dask_client, files,
                                                          annotator_params, tmp_path):
    from sklearn_npll import VLMPartialAnnotator

    annotator = VLMPartialAnnotator(CLASSES, mode="topk", k=2, cache_dir=tmp_path,
                                    **annotator_params)
    with cluster_backend("dask"):
        sharded = annotate_sharded(annotator, files, n_shards=5)
    assert not _WORKER_ANNOTATORS  # the shards ran on the workers, not here
    single = VLMPartialAnnotator(CLASSES, mode="topk", k=2, **annotator_params).fit()
    expected = single.transform(files)
    np.testing.assert_array_equal(sharded.candidates, expected.candidates)
    np.testing.assert_array_equal(sharded.votes, expected.votes)
    np.testing.assert_array_equal(sharded.classes, CLASSES)
    assert sharded.images is files
    # the workers' disk caches merged into one: a new process-local annotator
    # on the same directory finds every image there
    cached = VLMPartialAnnotator(CLASSES, mode="topk", k=2, cache_dir=tmp_path,
                                 **annotator_params).fit()
    calls = record_batch_sizes(cached.model_, "encode_image")
    try:
        np.testing.assert_array_equal(cached.annotate(files), expected.candidates)
    finally:
        del cached.model_.encode_image  # the model is shared with the other tests
    assert calls == []


def test_sharded_annotation_loads_one_model_per_worker_process(files, annotator_params):
    """In one process (joblib's sequential backend), every shard reuses the
    annotator fitted for the first one."""
    from sklearn_npll import VLMPartialAnnotator

    annotator = VLMPartialAnnotator(CLASSES, **annotator_params)
    fits = []
    original_fit = VLMPartialAnnotator.fit

    def counting_fit(self, *args, **kwargs):
        fits.append(os.getpid())
        return original_fit(self, *args, **kwargs)

    VLMPartialAnnotator.fit = counting_fit
    try:
        sharded = annotate_sharded(annotator, files, n_shards=6, n_jobs=1)
    finally:
        VLMPartialAnnotator.fit = original_fit
        _WORKER_ANNOTATORS.clear()
    assert len(fits) == 1
    assert sharded.candidates.shape == (len(files), len(CLASSES))
    with pytest.raises(ValueError, match="at least one image"):
        annotate_sharded(annotator, [], n_jobs=1)

"""Small models for serving: pickles without the training-only state, and
the prediction path exported to ONNX and torch.export."""

import copy
import json
import pickle
import warnings

import numpy as np
import pytest
import torch

from sklearn_npll import CCClassifier, CoRegClassifier, PRODENClassifier
from sklearn_npll.export import load_torch_export, prediction_module, to_onnx, to_torch_export


def _images(n=16, size=16, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randint(0, 256, (n, size, size, 3)).astype(np.uint8)
    y = np.array(["cat", "dog"])[np.arange(n) % 2]
    X[y == "cat", :, :, 0] = 255  # something to learn
    return X, y


@pytest.fixture(scope="module")
def coreg():
    # the defaults (backbone, queue, projection) but for a short run
    X, y = _images()
    return CoRegClassifier(max_epochs=2, warmup_epochs=1, batch_size=8,
                           random_state=0).fit(X, y)


def _weight_bytes(networks):
    return sum(t.numel() * t.element_size() for net in networks
               for t in [*net.for_prediction().parameters(), *net.for_prediction().buffers()])


def test_default_pickle_holds_only_what_predict_uses(coreg):
    X, _ = _images()
    small = pickle.dumps(coreg)
    assert len(small) <= 1.1 * _weight_bytes(coreg.inference_networks())
    full = pickle.dumps(copy.deepcopy(coreg).set_params(keep_training_state=True))
    assert len(full) > 3 * len(small)
    loaded = pickle.loads(small)
    np.testing.assert_array_equal(loaded.predict_proba(X), coreg.predict_proba(X))
    assert list(loaded.classes_) == ["cat", "dog"]
    assert loaded.optimizer_ is None and loaded.coreg_state_ is None
    assert not hasattr(loaded.module_, "key_encoder")
    with pytest.raises(Exception, match="keep_training_state=True"):
        loaded.partial_fit(X)
    # the estimator pickled is untouched and trains on
    assert coreg.optimizer_ is not None and hasattr(coreg.module_, "memory")


def test_pickle_with_training_state_holds_each_tensor_once(coreg):
    clf = copy.deepcopy(coreg).set_params(keep_training_state=True)
    tensors = [t for name in clf._modules for t in getattr(clf, name + "_").state_dict().values()]
    tensors += [t for state in clf.optimizer_.state.values() for t in state.values()
                if isinstance(t, torch.Tensor)]
    state_bytes = sum(t.numel() * t.element_size() for t in tensors)
    assert len(pickle.dumps(clf)) <= 1.1 * state_bytes


def test_predict_networks_first_pickles_one_network(coreg):
    one = copy.deepcopy(coreg).set_params(predict_networks="first")
    loaded = pickle.loads(pickle.dumps(one))
    assert loaded.module2_ is None
    X, _ = _images()
    np.testing.assert_array_equal(loaded.predict(X), one.predict(X))


@pytest.mark.parametrize("cls", [PRODENClassifier, CCClassifier])
def test_keep_training_state_pickles_resume_training(cls):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40) % 2
    kw = dict(batch_size=16, module__hidden_sizes=(8,), random_state=0)
    clf = cls(max_epochs=3, keep_training_state=True, **kw).fit(X, y)
    resumed = pickle.loads(pickle.dumps(clf)).partial_fit(X, y)
    clf.partial_fit(X, y)
    assert len(resumed.history_) == 4
    np.testing.assert_allclose(resumed.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    trimmed = copy.deepcopy(clf).trim_for_prediction()
    assert trimmed.optimizer_ is None
    np.testing.assert_array_equal(trimmed.predict(X), clf.predict(X))


def test_deepcopy_keeps_the_training_state(coreg):
    copied = copy.deepcopy(coreg)
    assert copied.optimizer_ is not None and copied.coreg_state_ is not None
    assert copied.module_ is not coreg.module_


@pytest.mark.parametrize("first", [False, True])
def test_onnx_export_matches_predict_proba(coreg, tmp_path, first):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    clf = copy.deepcopy(coreg).set_params(predict_networks="first" if first else "both")
    X, _ = _images(n=7, seed=1)  # another batch size than the export's example
    path = to_onnx(clf, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = X.transpose(0, 3, 1, 2).astype(np.float32) / 255
    logits, proba = session.run(None, {"x": x})
    np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-4)
    np.testing.assert_allclose(logits, clf.forward(X).numpy(), atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["classes"]) == ["cat", "dog"]


def test_torch_export_matches_predict_proba_on_features(tmp_path):
    rng = np.random.RandomState(0)
    X = (rng.normal(size=(30, 4)) * 5 + 3).astype(np.float32)
    y = np.arange(30) % 3
    clf = CCClassifier(max_epochs=2, batch_size=16, module__hidden_sizes=(8,),
                       random_state=0).fit(X, y)
    module, classes = load_torch_export(to_torch_export(clf, tmp_path / "model.pt2"))
    with torch.no_grad():
        logits, proba = module(torch.as_tensor(X[:5]))
    np.testing.assert_allclose(proba.numpy(), clf.predict_proba(X[:5]), atol=1e-5)
    assert list(classes) == [0, 1, 2]
    # the same module in-process, for other exporters
    with torch.no_grad():
        np.testing.assert_allclose(prediction_module(clf)(torch.as_tensor(X))[1].numpy(),
                                   clf.predict_proba(X), atol=1e-5)


# ------------------------------------------------ images of another size
@pytest.fixture(scope="module")
def trained_at_16():
    """A model whose probabilities depend on the picture (not near 1/2)."""
    rng = np.random.RandomState(0)
    X = rng.randint(0, 200, (48, 16, 16, 3)).astype(np.uint8)
    y = np.arange(48) % 3
    for c in range(3):
        X[y == c, 4:12, 4:12, c] = 255
    return CCClassifier(max_epochs=8, batch_size=16, lr=0.05, random_state=0).fit(X, y)


def _pictures(shape, n=6, seed=3):
    """Pictures of another size than training, with the classes' signal."""
    rng = np.random.RandomState(seed)
    X = rng.randint(0, 200, (n, *shape, 3)).astype(np.uint8)
    h, w = shape
    for i in range(n):
        X[i, h // 4: 3 * h // 4, w // 4: 3 * w // 4, i % 3] = 255
    return X


def _chw(X):
    return X.transpose(0, 3, 1, 2).astype(np.float32) / 255


#: exported model vs predict_proba, images of another size than training
PARITY_ATOL = 1e-4


@pytest.mark.parametrize("size", [(16, 16), (37, 29), (9, 40), (120, 90)])
def test_covercrop_resizes_as_predict_does(size):
    from sklearn_npll._data.image_store import fit_to_size
    from sklearn_npll.export import CoverCrop

    x = torch.rand(3, 3, *size)
    for target in [(16, 16), (12, 20)]:
        torch.testing.assert_close(CoverCrop(target)(x), fit_to_size(x, target),
                                   rtol=0, atol=1e-5)


def test_exports_resize_images_of_another_size_as_predict_does(trained_at_16, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    clf = trained_at_16
    session = onnxruntime.InferenceSession(str(to_onnx(clf, tmp_path / "m.onnx")),
                                           providers=["CPUExecutionProvider"])
    module, _ = load_torch_export(to_torch_export(clf, tmp_path / "m.pt2"))
    spread = []
    for shape in [(16, 16), (37, 29), (9, 40), (120, 90)]:
        X = _pictures(shape)
        expected = clf.predict_proba(X)
        spread.append(np.ptp(expected))
        onnx_proba = session.run(None, {"x": _chw(X)})[1]
        np.testing.assert_allclose(onnx_proba, expected, rtol=0, atol=PARITY_ATOL)
        torch_proba = module(torch.from_numpy(_chw(X)))[1].numpy()
        np.testing.assert_allclose(torch_proba, expected, rtol=0, atol=PARITY_ATOL)
    assert min(spread) > 0.2           # the model reacts to the picture: a real check


def test_onnx_on_decoded_png_files_matches_predict_on_the_files(trained_at_16, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from PIL import Image

    clf = trained_at_16
    session = onnxruntime.InferenceSession(str(to_onnx(clf, tmp_path / "m.onnx")),
                                           providers=["CPUExecutionProvider"])
    X = _pictures((45, 60))
    paths = []
    for i, picture in enumerate(X):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(picture).save(paths[-1])
    decoded = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    np.testing.assert_allclose(session.run(None, {"x": _chw(decoded)})[1],
                               clf.predict_proba(paths), rtol=0, atol=PARITY_ATOL)


def test_export_prints_no_tracer_warning_and_loads_for_inference(trained_at_16, tmp_path):
    pytest.importorskip("onnx")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        to_onnx(trained_at_16, tmp_path / "m.onnx")
        to_torch_export(trained_at_16, tmp_path / "m.pt2")
    assert [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)] \
        == []
    module, _ = load_torch_export(tmp_path / "m.pt2")
    logits, proba = module(torch.rand(2, 3, 20, 24))
    assert not logits.requires_grad and not proba.requires_grad

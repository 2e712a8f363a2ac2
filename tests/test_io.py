"""sklearn_npll.io: files that load without pickle, predict exactly like the
saved estimator, and refuse crafted content before it can run code."""

import importlib
import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from skorch.callbacks import GradientNormClipping
from sklearn.exceptions import NotFittedError
from torch import nn

from sklearn_npll import CCClassifier, CoRegClassifier, PRODENClassifier
from sklearn_npll._nn.backbones import MLP
from sklearn_npll.io import FileFormatError, UntrustedNameError, dump, load

ESTIMATORS = {"CoRegClassifier": CoRegClassifier, "PRODENClassifier": PRODENClassifier,
              "CCClassifier": CCClassifier}
PARAMS = {
    "CoRegClassifier": dict(warmup_epochs=2, start_contrastive=0, queue_size=32, proj_dim=8),
    "PRODENClassifier": dict(lr=0.05),
    "CCClassifier": dict(lr=0.05),
}
COMMON = dict(batch_size=16, cosine_epochs=8, random_state=0)


def blobs(n_per_class=12, n_classes=3, d=5, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(0, 4, (n_classes, d))
    X = np.concatenate([rng.normal(c, 1.0, (n_per_class, d)) for c in centers])
    y = np.repeat(np.arange(n_classes), n_per_class)
    Y = np.eye(n_classes, dtype=np.uint8)[y]
    Y[::3, (y[::3] + 1) % n_classes] = 1
    return X.astype(np.float32), y, Y


X, y, Y = blobs()
NAMES = np.array(["cat", "dog", "frog"])[y]


def images(n=24, size=12, seed=0):
    """RGB images whose class is the brightest channel."""
    rng = np.random.RandomState(seed)
    labels = np.arange(n) % 3
    out = rng.randint(0, 120, (n, size, size, 3)).astype(np.uint8)
    for i, c in enumerate(labels):
        out[i, :, :, c] += 120
    return out, labels


def make(name, **params):
    return ESTIMATORS[name](**{**COMMON, **PARAMS[name], **params})


class TinyEncoder(nn.Module):
    """A user's encoder: not in the allowlist, loaded only when trusted."""

    def __init__(self, d=5, width=6):
        super().__init__()
        self.layer = nn.Linear(d, width)
        self.out_features = width

    def forward(self, x):
        return torch.tanh(self.layer(x))


def rewrite(path, edit, out=None):
    """Apply ``edit(document, tensors)`` to a dumped file, as an attacker would."""
    with safe_open(str(path), framework="pt") as f:
        document = json.loads(f.metadata()["sklearn_npll"])
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    edit(document, tensors)
    out = out or path
    save_file(tensors, str(out), metadata={"sklearn_npll": json.dumps(document)})
    return out


def assert_same_model(loaded, original, X_test):
    np.testing.assert_array_equal(loaded.predict_proba(X_test), original.predict_proba(X_test))
    np.testing.assert_array_equal(loaded.predict(X_test), original.predict(X_test))
    assert loaded.classes_.dtype == original.classes_.dtype
    for name in ("image_size_", "sample_shape_", "n_train_samples_", "n_features_in_"):
        assert getattr(loaded, name, None) == getattr(original, name, None), name
    np.testing.assert_equal(list(loaded.history_), list(original.history_))


@pytest.fixture(scope="module")
def fitted():
    return {name: make(name, max_epochs=3, module__hidden_sizes=(16,)).fit(X, NAMES)
            for name in ESTIMATORS}


@pytest.fixture
def saved(fitted, tmp_path):
    path = tmp_path / "cc.safetensors"
    dump(fitted["CCClassifier"], path)
    return path


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", ESTIMATORS)
def test_feature_vectors_with_string_classes(name, fitted, tmp_path):
    clf = fitted[name]
    dump(clf, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    assert type(loaded) is type(clf)
    assert_same_model(loaded, clf, X)
    assert loaded.get_params(deep=False) == clf.get_params(deep=False)
    assert loaded.classes_.tolist() == ["cat", "dog", "frog"]
    np.testing.assert_array_equal(loaded.label_distribution_, clf.label_distribution_)
    # saved for prediction, as a default pickle is: it cannot train on
    with pytest.raises(NotFittedError, match="keep_training_state"):
        loaded.partial_fit(X, NAMES)
    dump(loaded, tmp_path / "again.safetensors")  # a loaded model saves again
    assert_same_model(load(tmp_path / "again.safetensors"), clf, X)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_images_with_int_classes_and_image_size(name, tmp_path):
    train, labels = images()
    clf = make(name, max_epochs=3, module__width=4, image_size=8).fit(train, labels)
    assert clf.image_size_ == (8, 8)
    dump(clf, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    assert_same_model(loaded, clf, images(n=9, size=16, seed=1)[0])
    assert loaded.classes_.tolist() == [0, 1, 2]


def test_feature_names_travel_with_the_model(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    clf = make("CCClassifier", max_epochs=2, module__hidden_sizes=(8,)).fit(frame, Y)
    dump(clf, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.feature_names_in_, clf.feature_names_in_)
    assert loaded.feature_names_in_.dtype == object
    assert_same_model(loaded, clf, frame)
    with pytest.raises(ValueError, match="feature names"):
        loaded.predict(frame.rename(columns={"f0": "other"}))


def test_a_library_backbone_and_a_random_state_are_stored_by_value(tmp_path):
    seed = np.random.RandomState(7)
    clf = make("PRODENClassifier", max_epochs=2, module=MLP, module__in_features=5,
               module__hidden_sizes=(8, 4),
               random_state=seed).fit(X, Y)
    dump(clf, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    assert loaded.module is MLP and loaded.module__hidden_sizes == (8, 4)
    assert loaded.random_state is not seed
    np.testing.assert_array_equal(loaded.random_state.get_state()[1], seed.get_state()[1])
    assert_same_model(loaded, clf, X)


def test_a_class_of_your_own_loads_only_when_trusted(tmp_path):
    clf = make("CoRegClassifier", max_epochs=3, module=TinyEncoder, module__width=4).fit(X, Y)
    dump(clf, tmp_path / "m.safetensors")
    name = f"{TinyEncoder.__module__}.TinyEncoder"
    with pytest.raises(UntrustedNameError, match=name.replace(".", r"\.")):
        load(tmp_path / "m.safetensors")
    for trusted in ([name], [TinyEncoder]):
        loaded = load(tmp_path / "m.safetensors", trusted=trusted)
        assert loaded.module is TinyEncoder
        assert_same_model(loaded, clf, X)
    with pytest.raises(TypeError, match="list of names"):
        load(tmp_path / "m.safetensors", trusted=name)


def test_one_network_and_array_and_device_parameters(tmp_path):
    prior = np.array([0.5, 0.3, 0.2])
    clf = make("CoRegClassifier", max_epochs=3, module__hidden_sizes=(8,),
               predict_networks="first", class_prior=prior,
               device=torch.device("cpu")).fit(X, Y)
    dump(clf, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        networks = {key.split(".")[1] for key in f.keys() if key.startswith("modules.")}
    assert networks == {"module"}
    loaded = load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.class_prior, prior)
    assert loaded.class_prior.dtype == prior.dtype
    assert loaded.device == torch.device("cpu")
    assert_same_model(loaded, clf, X)


def test_the_prediction_file_holds_no_training_state(fitted, tmp_path):
    dump(fitted["CoRegClassifier"], tmp_path / "small.safetensors")
    dump(fitted["CoRegClassifier"], tmp_path / "full.safetensors", keep_training_state=True)
    with safe_open(str(tmp_path / "small.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert not any("key_encoder" in k or "queue" in k or "memory" in k or "coreg_state" in k
                   for k in keys)
    assert {k.split(".")[1] for k in keys if k.startswith("modules.")} == {"module", "module2"}
    assert (tmp_path / "full.safetensors").stat().st_size \
        > 2 * (tmp_path / "small.safetensors").stat().st_size


# ---------------------------------------------------------------- training state
@pytest.mark.parametrize("name", ESTIMATORS)
def test_a_fit_saved_with_its_training_state_continues_exactly(name, tmp_path):
    kw = dict(module__hidden_sizes=(16,), optimizer=torch.optim.Adam, lr=0.01)
    first = make(name, max_epochs=4, warm_start=True, **kw).fit(X, Y)
    dump(first, tmp_path / "m.safetensors", keep_training_state=True)
    again = load(tmp_path / "m.safetensors").set_params(max_epochs=8).fit(X, Y)
    uninterrupted = make(name, max_epochs=8, **kw).fit(X, Y)
    np.testing.assert_array_equal(again.predict_proba(X), uninterrupted.predict_proba(X))
    assert len(again.history_) == 8


def test_keep_training_state_follows_the_estimator_and_needs_the_state(tmp_path):
    clf = make("CCClassifier", max_epochs=2, module__hidden_sizes=(8,),
               keep_training_state=True).fit(X, Y)
    dump(clf, tmp_path / "m.safetensors")
    assert load(tmp_path / "m.safetensors").partial_fit(X, Y).history_[-1]["epoch"] == 3
    clf.trim_for_prediction()
    with pytest.raises(ValueError, match="without its training state"):
        dump(clf, tmp_path / "m.safetensors", keep_training_state=True)


# -------------------------------------------------- what cannot be stored
def test_an_encoder_instance_is_refused_with_what_to_do(tmp_path):
    clf = make("CCClassifier", max_epochs=1, module=TinyEncoder()).fit(X, Y)
    with pytest.raises(ValueError, match=r"parameter 'module'.*module=MyEncoder"):
        dump(clf, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_training_only_objects_are_left_out_with_a_warning(tmp_path):
    train, labels = images()
    clf = make("CCClassifier", max_epochs=2, module__width=4,
               weak_augment=lambda x: x.flip(-1),
               callbacks=[("clip", GradientNormClipping(1.0))],
               callbacks__clip__gradient_clip_value=2.0).fit(train, labels)
    with pytest.warns(UserWarning, match="weak_augment.*callbacks.*callbacks__clip") as caught:
        dump(clf, tmp_path / "m.safetensors")
    assert caught[0].filename == __file__  # points at the caller
    loaded = load(tmp_path / "m.safetensors")
    assert loaded.weak_augment is None and loaded.callbacks is None
    assert_same_model(loaded, clf, train)


def test_an_unfitted_estimator_or_another_object_is_refused(tmp_path):
    with pytest.raises(NotFittedError, match="fit it before dump"):
        dump(CCClassifier(), tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="estimators of sklearn_npll"):
        dump(nn.Linear(2, 2), tmp_path / "m.safetensors")


# ------------------------------------------------------------- crafted files
@pytest.mark.parametrize("where,name", [("module", "subprocess.Popen"),
                                        ("optimizer", "builtins.eval"),
                                        ("estimator", "os.system")])
def test_a_name_outside_the_allowlist_is_refused(saved, where, name):
    def edit(document, tensors):
        if where == "estimator":
            document["estimator"] = name
        else:
            document["params"][where] = {"$ref": name}
    rewrite(saved, edit)
    with pytest.raises(UntrustedNameError, match=rf"'{name}' \(as {where}|params\.{where}"):
        load(saved)


def test_a_crafted_file_cannot_run_code(saved, tmp_path):
    """The file names builtins.open as the encoder, with arguments that create
    a file: refused without creating it; trusting the name does create it
    (the payload is live, so the first check can fail)."""
    marker = tmp_path / "code-ran"

    def edit(document, tensors):
        document["params"]["module"] = {"$ref": "builtins.open"}
        document["params"].pop("module__hidden_sizes")
        document["params"].update(module__file=str(marker), module__mode="w")
    rewrite(saved, edit)
    with pytest.raises(UntrustedNameError, match="builtins.open"):
        load(saved)
    assert not marker.exists()
    with pytest.raises(Exception):
        load(saved, trusted=["builtins.open"])
    assert marker.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_as_tensor_data_is_only_bytes(saved, tmp_path):
    marker = tmp_path / "code-ran"
    blob = pickle.dumps(_Payload(marker))

    def edit(document, tensors):
        tensors["modules.module.classifier.weight"] = torch.frombuffer(bytearray(blob),
                                                                       dtype=torch.uint8)
    rewrite(saved, edit)
    with pytest.raises(FileFormatError, match=r"classifier\.weight is torch\.uint8"):
        load(saved)
    assert not marker.exists()
    pickle.loads(blob)  # plain pickle runs the payload: the docs' warning
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_a_renamed_pickle_or_torch_archive_is_refused(kind, tmp_path):
    marker, path = tmp_path / "code-ran", tmp_path / "model.safetensors"
    if kind == "torch.save":
        torch.save({"module": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))
    message = "zip archive" if kind == "torch.save" else "it is a pickle"
    with pytest.raises(FileFormatError, match=message):
        load(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [4, 100, 0.5, 0.999])
def test_a_truncated_file_is_refused(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[:int(keep * len(data)) if keep < 1 else keep])
    with pytest.raises(FileFormatError, match="damaged or truncated"):
        load(saved)


def test_another_format_version_is_refused(saved):
    rewrite(saved, lambda document, tensors: document.update(format_version=2))
    with pytest.raises(FileFormatError, match="format version 2.*reads format version 1"):
        load(saved)


@pytest.mark.parametrize("change,message", [
    ("drop weight", r"classifier\.bias is missing"),
    ("drop value", "tensor 'values.fitted.input_mean_' is missing"),
    ("wrong dtype", r"classifier\.bias is torch\.float64 \(3,\), not torch\.float32"),
    ("extra tensor", "does not name"),
    ("no description", "without sklearn_npll's description"),
    ("odd attribute", "'__class__' is not an attribute that dump writes"),
    ("a method", "'predict' is not an attribute that dump writes"),
    ("odd fitted", "'initialized_' is not an attribute that dump writes"),
    ("unknown tag", "unknown entry"),
])
def test_a_damaged_or_edited_file_is_refused(saved, change, message):
    def edit(document, tensors):
        if change == "drop weight":
            del tensors["modules.module.classifier.bias"]
        elif change == "wrong dtype":
            tensors["modules.module.classifier.bias"] = \
                tensors["modules.module.classifier.bias"].double()
        elif change == "drop value":
            del tensors["values.fitted.input_mean_"]
        elif change == "extra tensor":
            tensors["values.more"] = torch.zeros(3)
        elif change == "odd attribute":
            document["params"]["__class__"] = 1
        elif change == "a method":
            document["params"]["predict"] = {"$ref": "torch.nn.Identity"}
        elif change == "odd fitted":
            document["fitted"]["initialized_"] = False
        elif change == "unknown tag":
            document["params"]["lr"] = {"$code": "print(1)"}
    if change == "no description":
        with safe_open(str(saved), framework="pt") as f:
            save_file({k: f.get_tensor(k) for k in f.keys()}, str(saved))
    else:
        rewrite(saved, edit)
    with pytest.raises(FileFormatError, match=message):
        load(saved)


def test_load_unpickles_and_imports_nothing(saved, fitted, monkeypatch):
    import skorch.net

    def forbidden(*args, **kwargs):
        raise AssertionError("load must not unpickle or import")
    for owner, name in [(pickle, "load"), (pickle, "loads"), (torch, "load"),
                        (importlib, "import_module"),
                        (skorch.net.NeuralNet, "__setstate__")]:
        monkeypatch.setattr(owner, name, forbidden)
    loaded = load(saved)
    monkeypatch.undo()
    np.testing.assert_array_equal(loaded.predict_proba(X),
                                  fitted["CCClassifier"].predict_proba(X))


def test_skops_runs_the_network_blob_with_plain_pickle(fitted, tmp_path):
    """Why the docs say skops files of these models must be trusted: the
    types skops reports look harmless, and the networks inside are read by
    skorch with pickle."""
    sio = pytest.importorskip("skops.io")
    import zipfile

    sio.dump(fitted["CCClassifier"], tmp_path / "m.skops")
    marker = tmp_path / "code-ran"
    with zipfile.ZipFile(tmp_path / "m.skops") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    blob = [name for name in members if name.endswith(".bin")]
    assert len(blob) == 1  # skorch's __cuda_dependent_attributes__
    members[blob[0]] = pickle.dumps({"module_": _Payload(marker)})
    with zipfile.ZipFile(tmp_path / "crafted.skops", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    untrusted = sio.get_untrusted_types(file=tmp_path / "crafted.skops")
    assert not any("os" == t.split(".")[0] or "open" in t for t in untrusted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sio.load(tmp_path / "crafted.skops", trusted=untrusted)
        except Exception:
            pass
    assert marker.exists()


# -------------------------------------------------------------------- annotator
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    pytest.importorskip("open_clip")
    from _common import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def test_the_annotator_round_trips_without_its_model(tiny_checkpoint, tmp_path):
    from _common import TINY_CLIP_NAME
    from sklearn_npll import VLMPartialAnnotator

    pictures = np.random.RandomState(0).randint(0, 256, (10, 32, 32, 3)).astype(np.uint8)
    annotator = VLMPartialAnnotator(["cat", "dog", "car"], model_name=TINY_CLIP_NAME,
                                    pretrained=tiny_checkpoint, batch_size=8, device="cpu")
    annotator.fit()
    Y_before = annotator.transform(pictures).candidates
    dump(annotator, tmp_path / "a.safetensors")
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == ["values.state.text_features_"]
    loaded = load(tmp_path / "a.safetensors")
    assert loaded.get_params() == annotator.get_params()
    np.testing.assert_array_equal(loaded.text_features_, annotator.text_features_)
    np.testing.assert_array_equal(loaded.transform(pictures).candidates, Y_before)
    np.testing.assert_array_equal(loaded.predict_proba(pictures),
                                  annotator.predict_proba(pictures))

    with_model = VLMPartialAnnotator(["cat", "dog"], model=annotator.model_,
                                     preprocess=annotator.preprocess_,
                                     tokenizer=annotator.tokenizer_, device="cpu").fit()
    with pytest.raises(ValueError, match="model_name= and pretrained="):
        dump(with_model, tmp_path / "b.safetensors")
    lambdas = VLMPartialAnnotator(["cat", "dog"], model_name=TINY_CLIP_NAME,
                                  pretrained=tiny_checkpoint, device="cpu",
                                  templates=[lambda c: f"a photo of a {c}."]).fit()
    with pytest.raises(ValueError, match="lambda"):
        dump(lambdas, tmp_path / "c.safetensors")

"""Behaviour of CoRegClassifier: fitting, prediction, fitted state, the
Co-Reg components, reproducibility, divergence guard, checkpoints."""

import math

import numpy as np
import pytest
import torch
from skorch.callbacks import EarlyStopping, LoadInitState
from torch import nn

from sklearn_npll import AnnotatedImages, CoRegClassifier, make_partial_labels
from sklearn_npll.callbacks import TrainingCheckpoint
from sklearn_npll._nn.backbones import MLP, PreActResNet18, SmallCNN
from sklearn_npll._nn.networks import CoRegNetwork

from _common import NaNEncoder

FAST = dict(batch_size=16, queue_size=64, proj_dim=16, module__hidden_sizes=(32,),
            random_state=0)


def blobs(n_per_class=30, n_classes=3, d=5, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(0, 4, (n_classes, d))
    X = np.concatenate([rng.normal(c, 1.0, (n_per_class, d)) for c in centers])
    y = np.repeat(np.arange(n_classes), n_per_class)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def data():
    X, y = blobs()
    Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.1, random_state=0)
    return X, y, Y


@pytest.fixture(scope="module")
def fitted(data):
    X, _, Y = data
    # warm-up 1 epoch; contrastive/prototype terms active from epoch 2 on
    return CoRegClassifier(max_epochs=4, warmup_epochs=1, start_contrastive=0,
                           **FAST).fit(X, Y)


def test_defaults_follow_the_spec():
    clf = CoRegClassifier()
    assert (clf.max_epochs, clf.warmup_epochs, clf.batch_size) == (100, 50, 256)
    assert (clf.lr, clf.momentum, clf.weight_decay) == (0.01, 0.9, 5e-4)
    assert (clf.queue_size, clf.proj_dim, clf.key_momentum) == (8192, 128, 0.999)
    assert (clf.sharpen_temperature, clf.mixup_alpha, clf.p_threshold) == (0.5, 4.0, 0.5)
    assert (clf.lambda_prototype, clf.lambda_contrastive, clf.start_contrastive) == (0.1, 0.1, 10)
    assert (clf.prototype_temperature, clf.contrastive_temperature) == (0.3, 0.07)


def test_fit_predict_shapes_and_fitted_state(data, fitted):
    X, y, Y = data
    n = len(X)
    assert list(fitted.classes_) == [0, 1, 2] and fitted.n_classes_ == 3
    assert fitted.predict(X).shape == (n,)
    proba = fitted.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(1)], fitted.predict(X))
    assert isinstance(fitted.module_, CoRegNetwork) and isinstance(fitted.module2_, CoRegNetwork)
    assert isinstance(fitted.module_.encoder, MLP)
    assert fitted.trust_.shape == (2, n)
    assert ((fitted.trust_ >= 0) & (fitted.trust_ <= 1)).all()
    dist = fitted.label_distribution_
    assert dist.shape == (n, 3)
    np.testing.assert_allclose(dist.sum(1), 1, rtol=1e-5)
    assert len(fitted.history_) == 4
    # learns the easy problem from partial labels
    assert fitted.score(X, y) > 0.8


def test_history_records_every_term(fitted):
    warm, last = fitted.history_[0], fitted.history_[-1]
    assert {"loss_pce", "loss_ne", "lr", "dur", "train_loss"} <= set(warm)
    for key in ("loss_x", "loss_u", "loss_prototype", "loss_contrastive",
                "n_trusted_a", "n_trusted_b", "noise_rate", "lr", "dur"):
        assert key in last, key
    assert 0 <= last["noise_rate"] <= 1
    assert all(math.isfinite(last[k]) for k in ("loss_x", "loss_contrastive"))


def test_contrastive_branch_fills_queue_and_prototypes_are_unit_rows(fitted):
    for net in (fitted.module_, fitted.module2_):
        z, t, flags = net.queue()
        assert len(z) > 0
        np.testing.assert_allclose(z.norm(dim=1).numpy(), 1, rtol=1e-4)
        assert flags.any()
    protos = fitted.coreg_state_.prototypes
    np.testing.assert_allclose(protos.norm(dim=1).numpy(), 1, rtol=1e-4)


def test_cosine_schedule_in_history(fitted):
    lrs = fitted.history_[:, "lr"]
    expected = [0.01e-3 + (0.01 - 0.01e-3) * (1 + math.cos(math.pi * e / 4)) / 2
                for e in range(4)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    # one optimizer, a parameter group per network, set alike; after the
    # last epoch the scheduler has stepped to the next epoch's value
    groups = fitted.optimizer_.param_groups
    assert len(groups) == 2
    assert groups[0]["lr"] == groups[1]["lr"] < expected[-1]
    assert {id(p) for p in groups[1]["params"]} == {
        id(p) for p in fitted.module2_.parameters() if p.requires_grad}


def test_terms_off_before_start_and_ablations(data):
    X, _, Y = data
    clf = CoRegClassifier(max_epochs=3, warmup_epochs=1, start_contrastive=5, **FAST).fit(X, Y)
    assert "loss_contrastive" not in clf.history_[-1]
    assert "loss_prototype" not in clf.history_[-1]
    # the contrastive branch (keys, queue) is skipped while its weight is zero
    assert int(clf.module_.queue_count) == 0
    # prototypes are still updated every iteration after warm-up
    assert clf.coreg_state_.prototypes.abs().sum() > 0

    ablated = CoRegClassifier(max_epochs=3, warmup_epochs=1, start_contrastive=0,
                              use_contrastive=False, use_prototypes=False,
                              use_unlabeled=False, **FAST).fit(X, Y)
    last = ablated.history_[-1]
    assert "loss_contrastive" not in last and "loss_prototype" not in last
    assert "loss_u" not in last
    assert int(ablated.module_.queue_count) == 0
    assert ablated.coreg_state_.prototypes.abs().sum() == 0


def test_co_pseudo_label_switch_changes_training(data):
    X, _, Y = data
    kw = dict(max_epochs=3, warmup_epochs=1, **FAST)
    a = CoRegClassifier(**kw).fit(X, Y)
    b = CoRegClassifier(use_co_pseudo_labels=False, **kw).fit(X, Y)
    assert a.history_[-1, "loss_x"] != b.history_[-1, "loss_x"]


def test_same_seed_same_predictions_other_seed_differs(data):
    X, _, Y = data
    kw = dict(max_epochs=3, warmup_epochs=1, start_contrastive=0,
              **{k: v for k, v in FAST.items() if k != "random_state"})
    p1 = CoRegClassifier(random_state=1, **kw).fit(X, Y).predict_proba(X)
    p2 = CoRegClassifier(random_state=1, **kw).fit(X, Y).predict_proba(X)
    p3 = CoRegClassifier(random_state=2, **kw).fit(X, Y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(p1, p3)


def test_fit_does_not_touch_global_rng(data):
    X, _, Y = data
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    CoRegClassifier(max_epochs=2, warmup_epochs=1, **FAST).fit(X, Y)
    np.testing.assert_array_equal(torch.rand(3), expected_torch)
    np.testing.assert_array_equal(np.random.rand(3), expected_np)


def test_predict_with_one_network(data, fitted):
    X = data[0]
    fitted.set_params(predict_networks="first")
    try:
        x = torch.as_tensor((X - fitted.input_mean_) / fitted.input_std_, dtype=torch.float32)
        fitted.module_.eval()
        with torch.no_grad():
            expected = fitted.module_(x).argmax(1).numpy()
        np.testing.assert_array_equal(fitted.predict(X), fitted.classes_[expected])
    finally:
        fitted.set_params(predict_networks="both")


def test_grey_images_and_class_names_through_annotation_container():
    rng = np.random.RandomState(0)
    y = np.repeat([0, 1], 20)
    images = np.zeros((40, 8, 8), np.uint8)
    images[y == 0, :, :4] = 200
    images[y == 1, :, 4:] = 200
    images = np.clip(images + rng.randint(0, 40, images.shape), 0, 255).astype(np.uint8)
    Y = make_partial_labels(y, 0.2, 0.0, random_state=0)
    votes = np.where(Y == 1, np.arange(2), -1)
    container = AnnotatedImages(images, Y, np.array(["left", "right"]), votes)
    clf = CoRegClassifier(max_epochs=3, warmup_epochs=2, batch_size=8, queue_size=32,
                          flip=False, random_state=0).fit(container)
    assert isinstance(clf.module_.encoder, SmallCNN)
    assert list(clf.classes_) == ["left", "right"]
    assert set(clf.predict(images)) <= {"left", "right"}
    assert 0 <= clf.score(container) <= 1          # covering rate, no labels
    names = np.array(["left", "right"])[y]
    assert 0 <= clf.score(images, names) <= 1      # accuracy with names


def test_rgb_32px_images_use_preact_resnet18():
    rng = np.random.RandomState(0)
    images = rng.randint(0, 255, (6, 32, 32, 3)).astype(np.uint8)
    y = np.array([0, 1, 0, 1, 0, 1])
    clf = CoRegClassifier(max_epochs=1, warmup_epochs=1, batch_size=4, random_state=0)
    clf.fit(images, y)
    assert isinstance(clf.module_.encoder, PreActResNet18)
    assert clf.module_.encoder.out_features == 512
    assert clf.predict(images).shape == (6,)


def test_user_encoder_with_module_params(data):
    X, _, Y = data

    class Linear(nn.Module):
        def __init__(self, width=4):
            super().__init__()
            self.layer = nn.Linear(5, width)

        def forward(self, x):
            return torch.relu(self.layer(x))

    clf = CoRegClassifier(Linear, module__width=7, max_epochs=2, warmup_epochs=1,
                          batch_size=16, queue_size=32, random_state=0)
    assert clf.get_params()["module__width"] == 7
    clf.fit(X, Y)
    assert clf.module_.encoder.layer.out_features == 7
    assert clf.module_.out_features == 7  # found by a dry forward pass


def test_nan_loss_stops_with_epoch_and_term(data):
    X, _, Y = data

    clf = CoRegClassifier(NaNEncoder, max_epochs=2, warmup_epochs=1, batch_size=16,
                          queue_size=32, random_state=0)
    with pytest.raises(FloatingPointError, match=r"epoch 1 \(warm-up.*loss_pce"):
        clf.fit(X, Y)


def test_bad_inputs_raise_clear_errors(data, fitted):
    X, y, Y = data
    with pytest.raises(ValueError, match="candidate"):
        CoRegClassifier().fit(X)
    bad = Y.copy()
    bad[[3, 7]] = 0
    with pytest.raises(ValueError, match="3"):
        CoRegClassifier(**FAST).fit(X, bad)
    with pytest.raises(ValueError):
        CoRegClassifier(**FAST).fit(X[:10], Y)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(X[:, :3])
    with pytest.raises(ValueError):
        fitted.predict(np.full((2, 5), np.nan, np.float32))


def test_validation_covering_rate_and_early_stopping(data):
    X, _, Y = data
    stop = EarlyStopping(monitor="valid_covering_rate", lower_is_better=False,
                         patience=1, threshold=2.0, threshold_mode="abs")
    clf = CoRegClassifier(max_epochs=6, warmup_epochs=1, validation_fraction=0.25,
                          callbacks=[("stop", stop)], **FAST).fit(X, Y)
    assert len(clf.history_) < 6
    assert all(0 <= v <= 1 for v in clf.history_[:, "valid_covering_rate"])


def test_checkpoint_and_resume_continue_the_schedule(data, tmp_path):
    X, _, Y = data
    kw = dict(warmup_epochs=1, start_contrastive=0, **FAST)
    first = CoRegClassifier(
        max_epochs=2, callbacks=[("cp", TrainingCheckpoint(str(tmp_path)))], **kw).fit(X, Y)
    folder, = tmp_path.glob("epoch-0002-*")
    assert {"module.pt", "module2.pt", "coreg_state.pt", "optimizer.pt",
            "random_state.pt", "history.json"} == {p.name for p in folder.iterdir()}
    cp = TrainingCheckpoint(str(tmp_path))
    resumed = CoRegClassifier(max_epochs=4, callbacks=[("load", LoadInitState(cp))], **kw)
    resumed.fit(X, Y)
    assert [row["epoch"] for row in resumed.history_] == [1, 2, 3, 4]
    assert resumed.history_[1, "loss_x"] == first.history_[1, "loss_x"]
    # the loaded state carries the division loss history: 3 divisions per network
    assert resumed.coreg_state_.history_count.tolist() == [3, 3]


def _grey_images(n=24, seed=0):
    rng = np.random.RandomState(seed)
    y = np.arange(n) % 2
    images = rng.randint(0, 60, (n, 8, 8)).astype(np.uint8)
    images[y == 0, :, :4] += 150
    images[y == 1, :, 4:] += 150
    return images, y


def test_trains_from_image_files_and_torch_datasets(tmp_path):
    from PIL import Image

    images, y = _grey_images()
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    kw = dict(max_epochs=2, warmup_epochs=1, batch_size=8, queue_size=32, flip=False,
              random_state=0)
    from_files = CoRegClassifier(**kw).fit(paths, y)
    from_arrays = CoRegClassifier(**kw).fit(images, y)
    np.testing.assert_allclose(from_files.predict_proba(paths),
                               from_arrays.predict_proba(images), rtol=1e-5, atol=1e-6)

    class Digits(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return torch.as_tensor(images[i])[None], int(y[i])

    from_dataset = CoRegClassifier(**kw).fit(Digits(), y)
    np.testing.assert_allclose(from_dataset.predict_proba(images),
                               from_arrays.predict_proba(images), rtol=1e-5, atol=1e-6)


def test_user_augmentations_replace_the_built_in_ones():
    from torchvision.transforms import v2

    images, y = _grey_images()
    calls = []

    def weak(image):
        calls.append(tuple(image.shape))
        return v2.functional.horizontal_flip(image)

    kw = dict(max_epochs=2, warmup_epochs=1, batch_size=8, queue_size=32, random_state=0)
    clf = CoRegClassifier(weak_augment=weak, strong_augment=v2.RandomRotation(10), **kw)
    clf.fit(images, y)
    assert calls and calls[0] == (1, 8, 8)   # applied per sample, on (C, H, W)
    assert not np.allclose(clf.predict_proba(images),
                           CoRegClassifier(**kw).fit(images, y).predict_proba(images))


def test_class_prior_options(data):
    X, _, Y = data
    kw = dict(max_epochs=2, warmup_epochs=1, **FAST)
    uniform = CoRegClassifier(**kw).fit(X, Y)
    estimated = CoRegClassifier(class_prior="candidates", **kw).fit(X, Y)
    given = CoRegClassifier(class_prior=[0.6, 0.2, 0.2], **kw).fit(X, Y)
    assert not np.allclose(uniform.trust_, given.trust_)
    assert estimated.trust_.shape == uniform.trust_.shape
    with pytest.raises(ValueError, match="class_prior"):
        CoRegClassifier(class_prior=[1.0, 0.0], **kw).fit(X, Y)


def test_batched_no_grad_passes_equal_separate_passes():
    """The weak-view passes run as one forward with batch norm per chunk:
    outputs and running statistics match separate passes."""
    from sklearn_npll._nn.networks import per_chunk_batch_norm

    torch.manual_seed(0)
    make = lambda: CoRegNetwork(SmallCNN(1, width=8), 3, (1, 8, 8), n_samples=4)
    separate, batched = make(), make()
    batched.load_state_dict(separate.state_dict())
    views = [torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8), torch.randn(3, 1, 8, 8)]
    with torch.no_grad():
        expected = torch.cat([separate(v) for v in views])
        with per_chunk_batch_norm(batched, [5, 5, 3]):
            got = batched(torch.cat(views))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(separate.named_buffers(), batched.buffers()):
        torch.testing.assert_close(a, b, msg=name)
    # the patch is gone afterwards: batch statistics over the whole batch again
    with torch.no_grad():
        assert not torch.allclose(batched(torch.cat(views)), expected, atol=1e-3)


@pytest.mark.parametrize("params, match", [
    ({"max_epochs": 0}, "max_epochs"),
    ({"p_threshold": 1.5}, "p_threshold"),
    ({"predict_networks": "second"}, "predict_networks"),
    ({"sharpen_temperature": 0}, "sharpen_temperature"),
])
def test_invalid_hyperparameters_fail_at_fit_with_their_name(data, params, match):
    X, _, Y = data
    clf = CoRegClassifier(**params)          # construction never validates
    with pytest.raises(ValueError, match=match):
        clf.fit(X, Y)

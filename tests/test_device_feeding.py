"""Mixed precision, device placement of the training store and channels_last.

No GPU runs these tests: the CUDA paths are checked through their decision
logic (with a mocked free-memory figure); mixed precision runs on the CPU.
"""

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_npll import CoRegClassifier, PRODENClassifier
from sklearn_npll._nn.backbones import MLP, SmallCNN
from sklearn_npll._runtime import (
    DEVICE_STORE_SHARE,
    resolve_precision,
    store_fits_on_device,
    use_channels_last,
)
from sklearn_npll._data.inputs import TensorData
from sklearn_npll._estimator.context import keeps_store_on_device

X = np.random.default_rng(0).integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
Y = np.arange(24) % 3
COREG = dict(max_epochs=3, warmup_epochs=1, start_contrastive=0, batch_size=8, queue_size=32,
             proj_dim=8, module__width=8, random_state=0)
PRODEN = dict(max_epochs=2, batch_size=8, module__width=8, random_state=0)


def cpu_autocast(dtype):
    try:
        with torch.autocast("cpu", dtype=dtype):
            return nn.Linear(2, 2)(torch.ones(1, 2)).dtype == dtype
    except RuntimeError:
        return False


@pytest.mark.parametrize("cls, params", [(CoRegClassifier, COREG), (PRODENClassifier, PRODEN)])
def test_auto_is_fp32_on_cpu_bit_for_bit(cls, params):
    fp32 = cls(precision="fp32", **params).fit(X, Y)
    auto = cls(**params).fit(X, Y)
    assert auto.precision_ == "fp32"
    np.testing.assert_array_equal(fp32.predict_proba(X), auto.predict_proba(X))


def test_auto_precision_choice():
    assert resolve_precision("auto", "cpu") == "fp32"
    expected = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_precision("auto", "cuda") == expected
    assert resolve_precision("fp16", "cpu") == "fp16"


def conv_output_dtypes(clf):
    """dtypes of the first convolution's outputs, recorded during fit and predict."""
    seen = set()
    original = clf._make_encoder

    def make(shape):
        encoder = original(shape)
        conv = next(m for m in encoder.modules() if isinstance(m, nn.Conv2d))
        conv.register_forward_hook(lambda m, a, out: seen.add(out.dtype))
        return encoder

    clf._make_encoder = make
    return seen


@pytest.mark.skipif(not cpu_autocast(torch.bfloat16), reason="no bf16 autocast on this CPU")
def test_bf16_runs_the_encoder_in_bf16_and_the_rest_in_fp32():
    clf = CoRegClassifier(precision="bf16", **COREG)
    seen = conv_output_dtypes(clf)
    clf.fit(X, Y)
    assert seen == {torch.bfloat16}
    proba = clf.predict_proba(X)
    assert proba.dtype == np.float32 and clf.label_distribution_.dtype == np.float32
    reference = CoRegClassifier(precision="fp32", **COREG).fit(X, Y).predict_proba(X)
    assert not np.array_equal(proba, reference)             # autocast really ran
    np.testing.assert_allclose(proba, reference, atol=0.05)
    # the autocast hooks are gone after fit: the model pickles and predicts the same
    assert not clf.module_.encoder._forward_hooks and not clf.module_.encoder._forward_pre_hooks
    plain = CoRegClassifier(precision="bf16", **COREG).fit(X, Y)
    np.testing.assert_array_equal(plain.predict_proba(X), proba)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(plain)).predict_proba(X), proba)


@pytest.mark.skipif(not cpu_autocast(torch.float16), reason="no fp16 autocast on this CPU")
def test_fp16_steps_through_a_grad_scaler(monkeypatch):
    steps = []

    class CountingScaler(torch.amp.GradScaler):
        def step(self, optimizer, *args, **kwargs):
            steps.append(optimizer)
            return super().step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", CountingScaler)
    clf = CoRegClassifier(precision="fp16", **{**COREG, "max_epochs": 2})
    seen = conv_output_dtypes(clf)
    clf.fit(X, Y)
    assert seen == {torch.float16}
    assert len(steps) == sum(clf.history[:, "train_batch_count"])
    assert {id(o) for o in steps} == {id(clf.optimizer_)}
    assert np.isfinite(clf.predict_proba(X)).all()


def test_precision_is_validated():
    with pytest.raises(ValueError, match="precision"):
        PRODENClassifier(precision="fp8", **PRODEN).fit(X, Y)


@pytest.fixture
def free_gpu_memory(monkeypatch):
    """A CUDA device with a chosen free-memory figure."""
    free = {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 << 30))
    return free


def test_store_goes_to_the_gpu_only_within_its_share(free_gpu_memory):
    device = torch.device("cuda")
    free_gpu_memory["bytes"] = 1000
    assert store_fits_on_device(int(DEVICE_STORE_SHARE * 1000), device)
    assert not store_fits_on_device(int(DEVICE_STORE_SHARE * 1000) + 1, device)
    data = TensorData(torch.zeros(10, 1, 10, 10, dtype=torch.uint8))   # 1000 bytes
    clf = PRODENClassifier()
    assert not keeps_store_on_device(clf, data, device)
    free_gpu_memory["bytes"] = 2000
    assert keeps_store_on_device(clf, data, device)
    assert not keeps_store_on_device(clf.set_params(device_store=False), data, device)
    free_gpu_memory["bytes"] = 0
    assert keeps_store_on_device(clf.set_params(device_store=True), data, device)


def test_channels_last_only_for_convolutions_on_cuda():
    cnn, mlp = SmallCNN(in_channels=3, width=4), MLP(in_features=5)
    assert use_channels_last(cnn, "cuda")
    assert not use_channels_last(mlp, "cuda") and not use_channels_last(cnn, "cpu")
    clf = PRODENClassifier(**PRODEN).fit(X, Y)                 # CPU: default memory format
    conv = next(m for m in clf.module_.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous()

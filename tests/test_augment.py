import math
import pickle

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from sklearn_npll._nn.augment import (
    STRONG_OPS,
    FeatureAugment,
    Normalize,
    PerSample,
    StrongAugment,
    WeakAugment,
    channel_stats,
    default_padding,
    make_augmenters,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=16, c=3, h=32, w=32, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=gen(seed))


def normalise(x, mean, std):
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)
    return (x - mean) / std


def reference_op(name, image_u8, magnitude):
    """One sample's operation computed with torchvision.transforms.v2.functional."""
    x = image_u8.float() / 255
    m = float(magnitude)
    h, w = x.shape[-2:]
    if name == "autocontrast":
        return TF.autocontrast(x)
    if name == "brightness":
        return TF.adjust_brightness(x, m)
    if name == "color":
        return TF.adjust_saturation(x, m)
    if name == "contrast":
        return TF.adjust_contrast(x, m)
    if name == "equalize":
        return TF.equalize(x)
    if name == "identity":
        return x
    if name == "posterize":  # on uint8, as PIL does
        return TF.posterize(image_u8, int(m)).float() / 255
    if name == "rotate":
        return TF.rotate(x, m)
    if name == "sharpness":
        return TF.adjust_sharpness(x, m)
    if name in ("shear_x", "shear_y"):
        deg = math.degrees(math.atan(m))
        shear = [deg, 0.0] if name == "shear_x" else [0.0, deg]
        return TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, center=[0, 0])
    if name == "solarize":
        return TF.solarize(x, m / 255) if m <= 255 else x
    if name == "translate_x":
        return TF.affine(x, angle=0.0, translate=[int(m * w), 0], scale=1.0, shear=[0.0, 0.0])
    if name == "translate_y":
        return TF.affine(x, angle=0.0, translate=[0, int(m * h)], scale=1.0, shear=[0.0, 0.0])
    raise AssertionError(name)


# --------------------------------------------------------------------------- common contract


def all_augmenters(c):
    mean, std = (0.5,) * c, (0.25,) * c
    return {
        "weak": WeakAugment(mean=mean, std=std),
        "strong": StrongAugment(mean=mean, std=std),
        "test": Normalize(mean=mean, std=std),
        "per_sample": PerSample(v2.RandomHorizontalFlip(), mean=mean, std=std),
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c, h, w", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 24, 40)])
@pytest.mark.parametrize("name", ["weak", "strong", "test", "per_sample"])
def test_shape_dtype_device(device, c, h, w, name):
    aug = all_augmenters(c)[name]
    batch = images(6, c, h, w).to(device)
    for x in (batch, batch.float() / 255):
        before = x.clone()
        out = aug(x, gen())
        assert out.shape == x.shape
        assert out.dtype == torch.float32
        assert out.device == x.device
        assert torch.isfinite(out).all()
        assert torch.equal(x, before)  # the input is never modified


@pytest.mark.parametrize("name", ["weak", "strong", "per_sample"])
def test_reproducible_and_global_rng_untouched(name):
    aug = all_augmenters(3)[name]
    batch = images(16)
    state = torch.get_rng_state()
    a = aug(batch, gen(1))
    b = aug(batch, gen(1))
    c = aug(batch, gen(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_pickle_round_trip():
    batch = images(8)
    for aug in list(all_augmenters(3).values()) + [FeatureAugment("strong", std=2.0)]:
        x = batch if not isinstance(aug, FeatureAugment) else batch.flatten(1).float()
        clone = pickle.loads(pickle.dumps(aug))
        assert torch.equal(clone(x, gen(4)), aug(x, gen(4)))
        assert type(aug).__name__ in repr(aug)


def test_uint8_and_float_input_agree():
    batch = images(16)
    for aug in all_augmenters(3).values():
        assert torch.allclose(aug(batch, gen(3)), aug(batch.float() / 255, gen(3)), atol=1e-5)


def test_strong_is_random_per_sample():
    aug = StrongAugment(mean=0.5, std=0.25)
    batch = images(1).expand(64, -1, -1, -1)  # 64 copies of one image
    out = aug(batch, gen())
    distinct_neighbours = sum(not torch.equal(out[i], out[i + 1]) for i in range(63))
    assert distinct_neighbours >= 60
    params = aug.sample_params(256, (32, 32), gen())
    assert len(torch.unique(params["op"])) == len(STRONG_OPS)


def test_empty_batch():
    for aug in all_augmenters(3).values():
        assert aug(images(0), gen()).shape == (0, 3, 32, 32)
    assert FeatureAugment("strong")(torch.zeros(0, 5), gen()).shape == (0, 5)


def test_bad_arguments():
    with pytest.raises(TypeError, match="torch.Generator"):
        WeakAugment()(images(2), 0)
    with pytest.raises(ValueError, match="channels"):
        WeakAugment()(images(2)[:, 0], gen())
    with pytest.raises(ValueError, match="3 channels"):
        Normalize(mean=(0.5, 0.5), std=1.0)(images(2), gen())
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize(mean=0.0, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="unknown operation"):
        StrongAugment(ops=("invert",))
    with pytest.raises(ValueError, match="padding"):
        WeakAugment(padding=-1)
    with pytest.raises(ValueError, match="cutout"):
        StrongAugment(cutout=-3)


# --------------------------------------------------------------------------- weak


def test_default_padding():
    assert default_padding((32, 32)) == 4
    assert default_padding((64, 64)) == 8
    assert default_padding((28, 28)) == 4
    assert default_padding((8, 8)) == 1
    assert default_padding((24, 40)) == 3


@pytest.mark.parametrize("c, h, w, padding", [(3, 32, 32, 4), (1, 28, 28, None), (3, 24, 40, 2)])
def test_weak_is_crop_with_padding_and_flip(c, h, w, padding):
    mean, std = (0.4,) * c, (0.3,) * c
    aug = WeakAugment(padding=padding, mean=mean, std=std)
    batch = images(24, c, h, w)
    params = aug.sample_params(24, (h, w), gen(5))
    p = default_padding((h, w)) if padding is None else padding
    assert int(params["top"].max()) <= 2 * p and int(params["left"].min()) >= 0
    assert params["flip"].any() and not params["flip"].all()
    out = aug.apply(batch, params)
    for i in range(24):
        ref = TF.crop(TF.pad(batch[i], [p]), int(params["top"][i]), int(params["left"][i]), h, w)
        if params["flip"][i]:
            ref = TF.horizontal_flip(ref)
        ref = normalise(ref.float()[None] / 255, mean, std)[0]
        torch.testing.assert_close(out[i], ref, atol=1e-6, rtol=0)
    # the call draws exactly these parameters
    assert torch.equal(aug(batch, gen(5)), out)


def test_weak_flip_false_never_flips():
    aug = WeakAugment(padding=0, flip=False)
    batch = images(64)
    assert not aug.sample_params(64, (32, 32), gen()).get("flip").any()
    torch.testing.assert_close(aug(batch, gen()), batch.float() / 255, atol=0, rtol=0)
    flips = WeakAugment(padding=0).sample_params(2000, (32, 32), gen())["flip"]
    assert 0.45 < flips.float().mean() < 0.55


# --------------------------------------------------------------------------- strong


@pytest.mark.parametrize("name", list(STRONG_OPS))
@pytest.mark.parametrize("c, h, w", [(3, 32, 32), (1, 20, 28)])
def test_strong_op_matches_torchvision(name, c, h, w):
    aug = StrongAugment(padding=0, flip=False, cutout=False, ops=(name,))
    batch = images(12, c, h, w, seed=7)
    params = aug.sample_params(12, (h, w), gen(11))
    low_high = STRONG_OPS[name]
    if low_high is not None:
        low, high = low_high
        assert ((params["magnitude"] >= math.floor(low)) & (params["magnitude"] < high)).all()
    out = aug.apply(batch, params)
    ref = torch.stack([reference_op(name, batch[i], params["magnitude"][i]) for i in range(12)])
    if name in GEOMETRIC:  # nearest-neighbour sampling: allow a rare tie broken differently
        assert ((out - ref).abs() > 1e-6).float().mean() < 0.002
    else:
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_strong_magnitude_ranges():
    aug = StrongAugment(ops=("posterize", "rotate", "solarize"))
    params = aug.sample_params(3000, (32, 32), gen())
    for k, name in enumerate(aug.ops):
        mags = params["magnitude"][params["op"] == k]
        if name == "posterize":
            assert set(mags.tolist()) == {4.0, 5.0, 6.0, 7.0}
        elif name == "rotate":
            assert -30 <= mags.min() < -25 and 25 < mags.max() <= 30
        else:
            assert 0 <= mags.min() < 10 and 245 < mags.max() < 256


def test_strong_mixed_batch_matches_per_sample_ops():
    aug = StrongAugment(padding=3, cutout=False, mean=(0.5,) * 3, std=(0.2,) * 3)
    batch = images(96, seed=3)
    params = aug.sample_params(96, (32, 32), gen(4))
    out = aug.apply(batch, params)
    weak = WeakAugment(padding=3)._crop_flip(batch.float() / 255, params)
    weak_u8 = torch.round(weak * 255).to(torch.uint8)
    ref = torch.stack(
        [
            reference_op(aug.ops[int(params["op"][i])], weak_u8[i], params["magnitude"][i])
            for i in range(96)
        ]
    )
    ref = normalise(ref, (0.5,) * 3, (0.2,) * 3)
    assert ((out - ref).abs() > 1e-4).float().mean() < 0.002


@pytest.mark.parametrize("c, h, w", [(3, 32, 32), (1, 28, 28), (3, 24, 40)])
def test_cutout_area_and_fill(c, h, w):
    aug = StrongAugment(padding=0, flip=False, ops=())
    batch = images(200, c, h, w)
    params = aug.sample_params(200, (h, w), gen())
    sizes = params["cutout_size"]
    assert sizes.max() <= min(h, w) // 2 and sizes.min() >= 0
    assert sizes.max() >= min(h, w) // 2 - 2  # the range is used
    out = aug.apply(batch, params)
    fill = torch.tensor([125 / 255, 123 / 255, 114 / 255] if c == 3 else [0.5] * c)
    for i in range(200):
        t, l, s = (int(params[k][i]) for k in ("cutout_top", "cutout_left", "cutout_size"))
        box = torch.zeros(h, w, dtype=torch.bool)
        box[t : t + s, l : l + s] = True
        assert torch.equal(out[i][:, box], fill[:, None].expand(c, int(box.sum())))
        assert torch.equal(out[i][:, ~box], batch[i][:, ~box].float() / 255)


def test_fixed_cutout_and_no_ops():
    aug = StrongAugment(padding=0, flip=False, cutout=16, ops=())
    params = aug.sample_params(50, (28, 28), gen())
    assert (params["cutout_size"] == 16).all()
    batch = images(50, 1, 28, 28)
    changed = (aug.apply(batch, params) != batch.float() / 255).flatten(1).sum(1)
    assert (changed <= 16 * 16).all()
    no_cut = StrongAugment(padding=0, flip=False, cutout=False, ops=("identity",))
    torch.testing.assert_close(no_cut(batch, gen()), batch.float() / 255, atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_strong_same_on_cuda_and_cpu():
    aug = StrongAugment(mean=(0.5,) * 3, std=(0.25,) * 3)
    batch = images(128)
    cpu = aug(batch, gen(9))
    cuda = aug(batch.cuda(), gen(9)).cpu()
    assert ((cpu - cuda).abs() > 1e-4).float().mean() < 0.002


# --------------------------------------------------------------------------- features


def test_feature_augment():
    torch.manual_seed(0)
    mean = torch.linspace(-1, 1, 32)
    std = torch.linspace(0.5, 2, 32)
    x = mean + std * torch.randn(512, 32)
    normed = Normalize(mean=mean, std=std)(x)
    torch.testing.assert_close(normed, (x - mean) / std)
    weak = FeatureAugment("weak", noise=0.1, mean=mean, std=std)
    out = weak(x, gen())
    assert out.shape == x.shape and out.dtype == torch.float32
    diff = out - normed
    assert abs(diff.mean().item()) < 0.01 and 0.09 < diff.std().item() < 0.11
    strong = FeatureAugment("strong", noise=0.1, drop=0.2, mean=mean, std=std)
    out = strong(x, gen())
    assert 0.18 < (out == 0).float().mean().item() < 0.22
    kept = out != 0
    assert ((out[kept] * 0.8 - normed[kept]).std() < 0.11).item()
    assert torch.equal(strong(x, gen(1)), strong(x, gen(1)))
    assert not torch.equal(strong(x, gen(1)), strong(x, gen(2)))
    with pytest.raises(ValueError, match="features"):
        weak(x[None], gen())
    with pytest.raises(ValueError, match="kind"):
        FeatureAugment("medium")


# --------------------------------------------------------------------------- user transforms


def test_per_sample_applies_transform_per_sample():
    batch = images(1).expand(32, -1, -1, -1)
    aug = PerSample(v2.RandomHorizontalFlip())
    out = aug(batch, gen())
    flipped = torch.tensor([torch.equal(o, TF.horizontal_flip(batch[0]).float() / 255) for o in out])
    assert 0 < flipped.sum() < 32
    resize = PerSample(lambda img: TF.resize(img, [16, 16]))
    assert resize(batch, gen()).shape == (32, 3, 16, 16)
    odd = PerSample(lambda img: img[:, : 16 + int(torch.randint(2, ()))])
    with pytest.raises(ValueError, match="one shape"):
        odd(images(16), gen())


# --------------------------------------------------------------------------- factories and stats


def test_make_augmenters():
    augs = make_augmenters((3, 64, 64), mean=(0.5,) * 3, std=(0.25,) * 3, flip=False)
    assert isinstance(augs["weak"], WeakAugment) and not isinstance(augs["weak"], StrongAugment)
    assert isinstance(augs["strong"], StrongAugment) and isinstance(augs["test"], Normalize)
    assert augs["weak"].padding == augs["strong"].padding == 8
    assert not augs["weak"].flip and not augs["strong"].flip
    assert make_augmenters((1, 28, 28), mean=None, std=None, padding=2)["strong"].padding == 2
    feats = make_augmenters((10,), mean=0.0, std=1.0)
    assert feats["weak"].kind == "weak" and feats["strong"].kind == "strong"
    assert feats["test"](torch.ones(4, 10)).shape == (4, 10)
    with pytest.raises(ValueError, match="sample_shape"):
        make_augmenters((3, 32), mean=None, std=None)


def test_channel_stats():
    batch = images(20, 3, 8, 8)
    x = batch.numpy().astype(np.float64) / 255
    mean, std = channel_stats(batch)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-10)
    # batches (also as (x, y) tuples) give the same result as the whole set
    mean2, std2 = channel_stats([(batch[:7], None), batch[7:15], batch[15:].float() / 255])
    np.testing.assert_allclose(mean2, mean, rtol=1e-6)
    np.testing.assert_allclose(std2, std, rtol=1e-6)
    feats = np.random.default_rng(0).normal(100.0, 3.0, size=(50, 4))
    feats[:, 2] = 7.0
    fm, fs = channel_stats(iter([feats[:20], feats[20:]]))
    np.testing.assert_allclose(fm, feats.mean(0))
    np.testing.assert_allclose(fs[[0, 1, 3]], feats.std(0)[[0, 1, 3]])
    assert fs[2] == 1.0  # constant feature: 1, so it can divide
    with pytest.raises(ValueError, match="no data"):
        channel_stats([])
    with pytest.raises(ValueError, match="shape"):
        channel_stats(torch.zeros(3, 4, 5))

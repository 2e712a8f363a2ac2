"""Real photo folders through the classifiers: mixed sizes and colour modes,
decoded once into a store, the size policy applied at prediction."""

import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from sklearn_npll import CCClassifier, CoRegClassifier, PRODENClassifier
from sklearn_npll._data.image_store import AUTO_SIZE_CAP, fit_to_size, load_images

SMALL = dict(module__width=8, batch_size=8, random_state=0)  # SmallCNN under 32 px
COREG = dict(SMALL, max_epochs=2, warmup_epochs=1, start_contrastive=0, queue_size=32,
             proj_dim=8)


def photo(rng, h, w, mode):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


@pytest.fixture
def mixed_folder(tmp_path):
    """16 files: JPEG and PNG, 12..40 px, RGB, grey, RGBA and palette."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(16):
        h, w = rng.integers(12, 40, 2)
        mode = ["RGB", "L", "RGBA", "P"][i % 4]
        path = tmp_path / f"img{i}.{'jpg' if mode in ('RGB', 'L') else 'png'}"
        photo(rng, h, w, mode).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("cls", [CoRegClassifier, PRODENClassifier, CCClassifier])
def test_mixed_sizes_and_modes_train_at_the_auto_size(cls, mixed_folder, capsys):
    params = COREG if cls is CoRegClassifier else dict(SMALL, max_epochs=1)
    clf = cls(verbose=1, **params).fit(mixed_folder, np.arange(16) % 2)
    shorter = [min(Image.open(p).size) for p in mixed_folder]
    side = int(min(np.median(shorter), AUTO_SIZE_CAP))
    assert clf.image_size_ == (side, side)
    assert clf.sample_shape_ == (3, side, side)            # grey, RGBA, P -> RGB
    assert f"resizing all to {side}x{side}" in capsys.readouterr().out
    # new images of other sizes and modes are brought to the fitted size
    new = [photo(np.random.default_rng(1), 90, 40, "L"), photo(np.random.default_rng(2), 33, 51, "RGBA")]
    assert clf.predict_proba(new).shape == (2, 2)


def test_list_of_pil_images_with_one_grey_image(capsys):
    rng = np.random.default_rng(0)
    images = [photo(rng, 12, 12, "RGB") for _ in range(7)] + [photo(rng, 12, 12, "L")]
    clf = PRODENClassifier(max_epochs=1, **SMALL).fit(images, np.arange(8) % 2)
    assert clf.sample_shape_ == (3, 12, 12) and clf.image_size_ == (12, 12)
    assert capsys.readouterr().out == ""                   # one size: nothing resized


def test_grey_only_images_keep_one_channel():
    rng = np.random.default_rng(0)
    images = [photo(rng, 10 + i, 12, "L") for i in range(6)]
    data, size = load_images(images, 8)
    assert size == (8, 8) and data.sample_shape == (1, 8, 8)


def test_explicit_size_covers_then_crops_the_centre():
    # 20x40 (HxW): black left 8 columns, white right 8, grey in between
    arr = np.full((20, 40), 128, dtype=np.uint8)
    arr[:, :8], arr[:, 32:] = 0, 255
    data, size = load_images([Image.fromarray(arr)] * 2, (10, 10))
    assert size == (10, 10)
    # scaled to 10x20 (covering 10x10), the centre crop keeps only the grey middle
    np.testing.assert_array_equal(data.data[0, 0].numpy(), np.full((10, 10), 128))
    wide, _ = load_images([Image.fromarray(arr)] * 2, (10, 20))
    row = wide.data[0, 0, 5].numpy()
    assert row[0] == 0 and row[-1] == 255                  # same aspect: nothing cut


def test_size_policy_none_keeps_the_one_size_rule(mixed_folder):
    with pytest.raises(ValueError, match="different sizes.*image_size=None"):
        PRODENClassifier(image_size=None, max_epochs=1, **SMALL).fit(mixed_folder, np.arange(16) % 2)
    with pytest.raises(ValueError, match="image_size must be"):
        PRODENClassifier(image_size=(3, 4, 5), **SMALL).fit(mixed_folder, np.arange(16) % 2)


def test_same_size_arrays_are_untouched_by_auto():
    X = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    y = np.arange(12) % 3
    auto = PRODENClassifier(max_epochs=2, **SMALL).fit(X, y)
    none = PRODENClassifier(image_size=None, max_epochs=2, **SMALL).fit(X, y)
    assert auto.image_size_ == (16, 16)
    np.testing.assert_array_equal(auto.predict_proba(X), none.predict_proba(X))


def test_fitted_size_is_applied_at_prediction():
    X = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    clf = PRODENClassifier(image_size=16, max_epochs=1, **SMALL).fit(X, np.arange(12) % 3)
    assert clf.sample_shape_ == (3, 16, 16)
    from torchvision.transforms.v2 import functional as F

    small = F.resize(torch.from_numpy(X).permute(0, 3, 1, 2), [16, 16], antialias=True)
    np.testing.assert_allclose(clf.predict_proba(X), clf.predict_proba(small.numpy()),
                               rtol=0, atol=1e-6)


@pytest.fixture
def file_log(tmp_path, monkeypatch):
    """Every Image.open and every pixel decode of an image file, in any process
    (DataLoader workers append to the same log file)."""
    log = tmp_path / "opens.log"
    open_, load = Image.open, ImageFile.ImageFile.load

    def write(line):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (line + "\n").encode())
        os.close(fd)

    def counting_open(fp, *args, **kwargs):
        write(f"open {os.fspath(fp)}")
        return open_(fp, *args, **kwargs)

    def counting_load(self):
        if getattr(self, "_im", None) is None and getattr(self, "filename", None):
            write(f"decode {self.filename} {self.size[0]}x{self.size[1]}")
        return load(self)

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)

    def read():
        return log.read_text().splitlines() if log.exists() else []
    return read


@pytest.mark.parametrize("max_epochs", [1, 3])
def test_each_file_is_decoded_once_per_fit(mixed_folder, file_log, max_epochs):
    CoRegClassifier(**{**COREG, "max_epochs": max_epochs}, num_workers=2).fit(
        mixed_folder, np.arange(16) % 2)
    lines = file_log()
    opens = [line.split()[1] for line in lines if line.startswith("open")]
    decodes = [line.split()[1] for line in lines if line.startswith("decode")]
    # one header read (sizes, modes) and one decode per file; epochs open none
    assert sorted(opens) == sorted(mixed_folder * 2)
    assert sorted(decodes) == sorted(mixed_folder)


def test_large_jpegs_decode_at_reduced_scale(tmp_path, file_log):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"big{i}.jpg"
        photo(rng, 1600, 2000 + 100 * i, "RGB").save(path)
        paths.append(str(path))
    data, size = load_images(paths, 64)
    assert size == (64, 64) and data.sample_shape == (3, 64, 64)
    decoded = [line.split()[2] for line in file_log() if line.startswith("decode")]
    assert len(decoded) == 3
    for text in decoded:                                   # 1/8 scale: 200 px high
        w, h = map(int, text.split("x"))
        assert h == 200 and w <= 2200 // 8 + 1


def test_store_over_the_memory_budget_is_memory_mapped(mixed_folder):
    y = np.arange(16) % 2
    in_memory, _ = load_images(mixed_folder, 24)
    on_disk, _ = load_images(mixed_folder, 24, memory_budget=1000)
    assert not in_memory.on_disk and on_disk.on_disk
    assert isinstance(on_disk.store, np.memmap)             # the tensor is a view of it
    assert on_disk.data.data_ptr() == on_disk.store.ctypes.data
    np.testing.assert_array_equal(in_memory.data.numpy(), on_disk.data.numpy())
    a = PRODENClassifier(image_size=24, max_epochs=1, **SMALL).fit(mixed_folder, y)
    b = PRODENClassifier(image_size=24, memory_budget=0, max_epochs=1, **SMALL).fit(mixed_folder, y)
    np.testing.assert_array_equal(a.predict_proba(mixed_folder), b.predict_proba(mixed_folder))


def test_unreadable_file_is_named_with_its_index_from_a_worker(mixed_folder):
    with open(mixed_folder[5], "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(ValueError, match=r"img5\.jpg.*sample 5"):
        load_images(mixed_folder, 24, num_workers=2)
    data, _ = load_images(mixed_folder[:5] + mixed_folder[6:], 24, num_workers=2)
    truncated = mixed_folder[0]
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 2)    # header intact, pixels cut
    with pytest.raises(ValueError, match=r"img0\.jpg.*sample 0"):
        load_images(mixed_folder[:5] + mixed_folder[6:], 24, num_workers=2)


def test_datasets_of_mixed_sizes():
    from torch.utils.data import Dataset

    rng = np.random.default_rng(0)

    class Photos(Dataset):
        images = [photo(rng, 20 + 4 * i, 30, "RGB" if i % 2 else "L") for i in range(8)]

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.images[i], i % 2

    data, size = load_images(Photos(), "auto")
    assert size == (30, 30) and data.sample_shape == (3, 30, 30)   # item 0 grey, others RGB
    assert data.dtype == torch.uint8 and len(data) == 8
    floats = torch.utils.data.TensorDataset(torch.rand(6, 3, 10, 10))
    data, size = load_images(floats, 5)
    assert data.dtype == torch.float32 and data.sample_shape == (3, 5, 5)
    expected = fit_to_size(floats.tensors[0][2], (5, 5))
    torch.testing.assert_close(data.data[2], expected, rtol=0, atol=0)


def test_annotator_then_coreg_on_a_folder_of_mixed_photos(mixed_folder, tmp_path):
    from sklearn.pipeline import Pipeline

    from _common import TINY_CLIP_NAME, save_tiny_clip
    from sklearn_npll.annotate import VLMPartialAnnotator

    checkpoint = save_tiny_clip(tmp_path)
    classes = ["cat", "dog", "car"]
    pipe = Pipeline([
        ("annotate", VLMPartialAnnotator(classes, model_name=TINY_CLIP_NAME,
                                         pretrained=checkpoint)),
        # only the length of training is set; sizes and modes are left to the default
        ("coreg", CoRegClassifier(max_epochs=2, warmup_epochs=1, batch_size=8)),
    ]).fit(mixed_folder)
    assert pipe["coreg"].image_size_[0] == pipe["coreg"].image_size_[1] < 40
    assert set(pipe.predict(mixed_folder[:4])) <= set(classes)


@pytest.mark.parametrize("modes, channels", [(["L", "RGB", "P"], 3), (["L", "1", "LA"], 1)])
def test_colour_if_any_file_is_colour(tmp_path, modes, channels):
    rng = np.random.default_rng(0)
    paths = [str(tmp_path / f"{i}.png") for i in range(len(modes))]
    for path, mode in zip(paths, modes):
        photo(rng, 9, 9, mode).save(path)
    data, _ = load_images(paths, "auto")
    assert data.sample_shape == (channels, 9, 9)

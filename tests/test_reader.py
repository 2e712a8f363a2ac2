"""One reader for every decoder: 16-bit and float images rescaled (not
clipped), EXIF orientation applied, the same pixels at fit, predict,
annotation and in the report; unreadable files reported together, or
skipped with their rows of y; Pillow's decompression-bomb limit named."""

import base64
import io
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from sklearn_npll import CoRegClassifier, DistillationClassifier, PRODENClassifier
from sklearn_npll._data.annotated import AnnotatedImages
from sklearn_npll._data.image_store import load_images
from sklearn_npll._data.reader import ImageReadError, read_image

SMALL = dict(module__width=8, batch_size=8, random_state=0, max_epochs=2)


def gradient(h, w, seed=0):
    """An 8-bit RGB image with no symmetry: a rotation or flip changes it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([yy * 255 // max(h - 1, 1), xx * 255 // max(w - 1, 1),
                     (yy * xx) % 256], -1)
    return (base + rng.integers(0, 8, base.shape)).clip(0, 255).astype(np.uint8)


def save_rotated_jpeg(path, pixels, orientation=6):
    """A JPEG whose EXIF says how to turn it upright."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return str(path)


@pytest.fixture
def sixteen_bit(tmp_path):
    """A 16-bit greyscale PNG (Pillow writes mode I;16) and the 8-bit PNG of
    the same picture, ``round(v / 257)``."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (20, 28)).astype(np.uint16)
    values[:, :4] = 65535
    Image.fromarray(values).save(tmp_path / "scan16.png")
    assert Image.open(tmp_path / "scan16.png").mode == "I;16"
    eight = np.round(values / 257).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "scan8.png")
    return str(tmp_path / "scan16.png"), str(tmp_path / "scan8.png"), eight


# ------------------------------------------------------------- bit depth
def test_16_bit_png_is_rescaled_not_clipped(sixteen_bit):
    path16, _, eight = sixteen_bit
    clipped = np.asarray(Image.open(path16).convert("L"))      # what Pillow does
    assert (clipped == 255).mean() > 0.99
    np.testing.assert_array_equal(np.asarray(read_image(path16)), eight)
    data, _ = load_images([path16], None)
    np.testing.assert_array_equal(data.data[0, 0].numpy(), eight)


@pytest.mark.parametrize("mode, dtype", [("I;16B", ">u2"), ("I;16L", "<u2")])
def test_16_bit_tiffs_of_either_byte_order(tmp_path, mode, dtype):
    values = np.random.default_rng(1).integers(0, 65536, (9, 7)).astype(np.uint16)
    path = tmp_path / "scan.tif"
    Image.frombytes(mode, (7, 9), values.astype(dtype).tobytes()).save(path)
    expected = np.round(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(read_image(path)), expected)
    # in a colour store, the grey scan is rescaled first, then made RGB
    rgb = np.asarray(read_image(path, "RGB"))
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, -1))


def test_float_and_32_bit_images(tmp_path):
    unit = np.random.default_rng(2).random((6, 5)).astype(np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "unit.tif")),
                                  np.round(unit * 255).astype(np.uint8))
    wide = unit * 1000 - 200                       # outside [0, 1]: stretched
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    stretched = (wide.astype(np.float64) - wide.min()) * 255 / (wide.max() - wide.min())
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "wide.tif")),
                                  np.round(stretched).astype(np.uint8))
    ints = (unit * 65535).astype(np.int32)         # mode I on the 16-bit scale
    np.testing.assert_array_equal(np.asarray(read_image(Image.fromarray(ints))),
                                  np.round(ints / 257).astype(np.uint8))
    bad = unit.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(Image.fromarray(bad))


def test_16_bit_images_train_and_predict_like_their_8_bit_copy(sixteen_bit, tmp_path):
    path16, path8, _ = sixteen_bit
    paths16 = [path16] * 4 + [path8] * 4
    paths8 = [path8] * 8
    y = np.arange(8) % 2
    a = PRODENClassifier(image_size=12, **SMALL).fit(paths16, y)
    b = PRODENClassifier(image_size=12, **SMALL).fit(paths8, y)
    np.testing.assert_array_equal(a.predict_proba([path16]), b.predict_proba([path8]))
    pil16 = Image.open(path16)
    np.testing.assert_array_equal(a.predict_proba([pil16]), a.predict_proba([path8]))


# ----------------------------------------------------------- orientation
def test_exif_orientation_is_applied_at_fit_and_predict(tmp_path):
    pixels = gradient(20, 30)
    path = save_rotated_jpeg(tmp_path / "phone.jpg", pixels, orientation=6)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert upright.shape[:2] == (30, 20)
    np.testing.assert_array_equal(np.asarray(read_image(path)), upright)
    data, size = load_images([path], None)
    assert size == (30, 20)                                 # the header pass knows too
    np.testing.assert_array_equal(data.data[0].permute(1, 2, 0).numpy(), upright)
    # trained on the file or on the upright picture: the same model
    y = np.arange(8) % 2
    clf = PRODENClassifier(**SMALL).fit([path] * 8, y)
    same = PRODENClassifier(**SMALL).fit([Image.fromarray(upright)] * 8, y)
    assert clf.image_size_ == (30, 20)
    expected = same.predict_proba([Image.fromarray(upright)])
    # predicted from the file, from the PIL image the user opened, upright
    np.testing.assert_array_equal(clf.predict_proba([path]), expected)
    np.testing.assert_array_equal(clf.predict_proba([Image.open(path)]), expected)
    np.testing.assert_array_equal(clf.predict_proba([Image.fromarray(upright)]), expected)


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 7, 8])
def test_every_exif_orientation(tmp_path, orientation):
    path = save_rotated_jpeg(tmp_path / "o.jpg", gradient(10, 16), orientation)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    np.testing.assert_array_equal(np.asarray(read_image(path)), upright)
    data, size = load_images([path], None)
    assert size == upright.shape[:2]


def test_large_rotated_jpeg_decodes_in_draft_mode_upright(tmp_path):
    path = save_rotated_jpeg(tmp_path / "big.jpg", gradient(400, 640), orientation=8)
    full = np.asarray(read_image(path))
    assert full.shape[:2] == (640, 400)
    small = read_image(path, draft=(64, 40))
    assert small.size == (50, 80)                           # 1/8 scale, upright
    data, _ = load_images([path], (64, 40))
    reference = np.asarray(Image.fromarray(full).resize((40, 64), Image.Resampling.BILINEAR))
    assert np.abs(data.data[0].permute(1, 2, 0).numpy().astype(int) - reference).mean() < 6


def test_report_thumbnails_read_like_the_classifier(tmp_path, sixteen_bit):
    from sklearn_npll._report._thumbnails import thumbnails

    path16, _, eight = sixteen_bit
    rotated = save_rotated_jpeg(tmp_path / "phone.jpg", gradient(20, 30), orientation=6)
    thumbs = thumbnails([rotated, path16], [0, 1])

    def decoded(thumb):
        return Image.open(io.BytesIO(base64.b64decode(thumb.src.split(",", 1)[1])))

    assert decoded(thumbs[0]).size == (20, 30)              # upright: W x H
    np.testing.assert_array_equal(np.asarray(decoded(thumbs[1])), eight)  # PNG: lossless


# ------------------------------------------------------- unreadable files
@pytest.fixture
def folder(tmp_path):
    """12 readable PNGs and, at indices 3, 7 and 10, a file that is no image,
    a truncated JPEG (its header reads, its pixels do not) and a missing file."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (tmp_path / "img3.png").write_bytes(b"not an image")
    big = tmp_path / "img7.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(big)
    big.write_bytes(big.read_bytes()[:700])
    paths[7] = str(big)
    paths[10] = str(tmp_path / "missing.png")
    return paths


BAD = [3, 7, 10]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_unreadable_files_are_reported_together_and_short(folder, num_workers):
    with pytest.raises(ImageReadError) as info:
        load_images(folder, 10, num_workers=num_workers)
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == "3 of 12 image files could not be read:"
    assert "img3.png' (sample 3): UnidentifiedImageError" in lines[1]
    assert "img7.jpg' (sample 7): OSError" in lines[2]       # found by a worker
    assert "missing.png' (sample 10): FileNotFoundError" in lines[3]
    assert "on_bad_image='skip'" in lines[4]
    assert "Traceback" not in message and len(lines) == 5
    assert [i for i, _, _ in info.value.failures] == BAD


def test_every_file_unreadable_says_so(tmp_path):
    with pytest.raises(ImageReadError, match="2 of 2 image files could not be read"):
        PRODENClassifier(on_bad_image="skip", **SMALL).fit(
            [str(tmp_path / "a.png"), str(tmp_path / "b.png")], [0, 1])


def _reference(cls, folder, Y, **params):
    """The same fit on the readable files and their rows only."""
    keep = [i for i in range(len(folder)) if i not in BAD]
    Y = Y.iloc[keep] if hasattr(Y, "iloc") else (
        [Y[i] for i in keep] if isinstance(Y, list) else np.asarray(Y)[keep])
    return cls(**params).fit([folder[i] for i in keep], Y), [folder[i] for i in keep]


@pytest.mark.parametrize("form", ["labels", "matrix", "sets", "frame", "annotated"])
def test_skip_drops_the_rows_of_y_with_the_files(folder, form):
    rng = np.random.RandomState(0)
    Y = np.eye(3, dtype=np.uint8)[rng.randint(0, 3, 12)]
    Y[rng.rand(12) < 0.4, 2] = 1
    names = np.array(["cat", "dog", "fox"])
    y = {"labels": Y.argmax(1), "matrix": Y, "frame": pd.DataFrame(Y, columns=names),
         "sets": [set(names[row.astype(bool)]) for row in Y],
         "annotated": None}[form]
    X = AnnotatedImages(folder, Y, names) if form == "annotated" else folder
    with pytest.warns(UserWarning, match=r"(?s)3 of 12 image files could not be read; "
                      r"on_bad_image='skip': they are left out, with their rows of y:"
                      r".*sample 3.*sample 7.*sample 10"):
        clf = PRODENClassifier(on_bad_image="skip", **SMALL).fit(X, y)
    assert clf.n_train_samples_ == 9
    reference, readable = _reference(PRODENClassifier, folder, Y if y is None else y,
                                     **SMALL)
    np.testing.assert_array_equal(clf.predict_proba(readable),
                                  reference.predict_proba(readable))
    with pytest.raises(ImageReadError, match="3 of 12"):   # predict answers for every sample
        clf.predict(folder)


def test_skip_drops_verified_flags_and_teacher_probabilities(folder):
    rng = np.random.RandomState(1)
    y = rng.randint(0, 2, 12)
    verified = np.zeros(12, bool)
    verified[[0, 5]] = True
    params = dict(SMALL, warmup_epochs=1, queue_size=16, proj_dim=8)
    with pytest.warns(UserWarning, match="left out"):
        clf = CoRegClassifier(on_bad_image="skip", **params).fit(folder, y, verified=verified)
    keep = [i for i in range(12) if i not in BAD]
    readable = [folder[i] for i in keep]
    reference = CoRegClassifier(**params).fit(readable, y[keep], verified=verified[keep])
    np.testing.assert_array_equal(clf.predict_proba(readable), reference.predict_proba(readable))
    P = rng.dirichlet(np.ones(3), 12)
    teacher = AnnotatedImages(folder, np.eye(3)[P.argmax(1)], ["a", "b", "c"], proba=P)
    with pytest.warns(UserWarning, match="left out"):
        student = DistillationClassifier(on_bad_image="skip", **SMALL).fit(teacher)
    reference = DistillationClassifier(**SMALL).fit(teacher[keep])
    np.testing.assert_array_equal(student.predict_proba(readable),
                                  reference.predict_proba(readable))


def test_skip_checks_the_length_of_y_against_X(folder):
    with pytest.raises(ValueError, match="11 rows but X has 12 samples"):
        PRODENClassifier(on_bad_image="skip", **SMALL).fit(folder, np.arange(11) % 2)


def test_unreadable_pil_images_and_dataset_items_are_collected_too():
    from torch.utils.data import Dataset

    good = Image.fromarray(gradient(8, 8))
    closed = Image.fromarray(gradient(8, 8))
    closed.close()
    with pytest.raises(ImageReadError, match=r"1 of 3 images.*\n  PIL image \(sample 1\)"):
        load_images([good, closed, good], 8)

    class Flaky(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            if i in (2, 4):
                raise KeyError(f"no item {i}")
            return good

    with pytest.warns(UserWarning, match=r"(?s)2 of 5 dataset items.*item 2.*KeyError"):
        data, _ = load_images(Flaky(), 8, on_bad_image="skip")
    assert len(data) == 3 and data.source_mask.tolist() == [True, True, False, True, False]


# -------------------------------------------------------- decompression bomb
def test_bomb_warning_and_error_name_the_file_and_the_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)
    Image.fromarray(gradient(12, 15)).save(tmp_path / "large.png")     # 180 px: warned
    Image.fromarray(gradient(20, 20)).save(tmp_path / "huge.png")      # 400 px: refused
    small = [str(tmp_path / "large.png")] * 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data, _ = load_images(small[:1], None)
    bombs = [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert len(bombs) == 1                                 # the header pass; not again
    assert "large.png" in str(bombs[0].message)
    assert "PIL.Image.MAX_IMAGE_PIXELS = 150" in str(bombs[0].message)
    with pytest.raises(ImageReadError) as info:
        load_images(small + [str(tmp_path / "huge.png")], 12)
    assert "huge.png' (sample 3): DecompressionBombError" in str(info.value)
    assert "PIL.Image.MAX_IMAGE_PIXELS = 150" in str(info.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the setting it names
    data, _ = load_images(small + [str(tmp_path / "huge.png")], 12)
    assert len(data) == 4


# ------------------------------------------------------------- annotator
@pytest.fixture(scope="module")
def annotator(tmp_path_factory):
    from _common import TINY_CLIP_NAME, save_tiny_clip
    from sklearn_npll.annotate import VLMPartialAnnotator

    checkpoint = save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
    return VLMPartialAnnotator(["cat", "dog", "car"], model_name=TINY_CLIP_NAME,
                               pretrained=checkpoint, n_jobs=2).fit()


def test_annotator_reads_16_bit_and_rotated_files_like_the_classifier(annotator, sixteen_bit,
                                                                       tmp_path):
    path16, path8, _ = sixteen_bit
    np.testing.assert_array_equal(annotator.predict_proba([path16]),
                                  annotator.predict_proba([path8]))
    blank = Image.fromarray(np.full((20, 28), 255, np.uint8))
    assert np.abs(annotator.predict_proba([path16]) - annotator.predict_proba([blank])).max() \
        > 1e-3
    # a small JPEG (no draft scaling): the file, and the upright picture in memory
    path = save_rotated_jpeg(tmp_path / "phone.jpg", gradient(40, 60), orientation=6)
    upright = ImageOps.exif_transpose(Image.open(path))
    np.testing.assert_array_equal(annotator.predict_proba([path]),
                                  annotator.predict_proba([upright]))
    np.testing.assert_array_equal(annotator.predict_proba([Image.open(path)]),
                                  annotator.predict_proba([upright]))
    sideways = Image.fromarray(np.asarray(Image.open(path)))  # pixels as stored, no EXIF
    assert np.abs(annotator.predict_proba([path]) - annotator.predict_proba([sideways])).max() \
        > 1e-4


def test_file_cache_keys_hold_the_reader_version(monkeypatch):
    from sklearn_npll._vlm import images

    now = images.file_key(b"same bytes", draft=32)
    monkeypatch.setattr(images, "READER_VERSION", 1)      # an older reader's pixels
    assert images.file_key(b"same bytes", draft=32) != now


def test_annotator_reports_unreadable_files_together_or_skips_them(annotator, folder):
    with pytest.raises(ImageReadError) as info:
        annotator.annotate(folder)
    lines = str(info.value).splitlines()
    assert lines[0] == "3 of 12 images could not be read:"
    assert [i for i, _, _ in info.value.failures] == BAD
    skipping = annotator.set_params(on_bad_image="skip")
    try:
        with pytest.warns(UserWarning, match=r"(?s)3 of 12 images.*unlabeled.*sample 10"):
            out = skipping.fit_transform(folder)
        assert (out.candidates[BAD] == 1).all() and (out.votes[BAD] == -1).all()
        np.testing.assert_allclose(out.proba[BAD], 1 / 3)
        readable = [i for i in range(12) if i not in BAD]
        reference = skipping.annotate([folder[i] for i in readable])
        np.testing.assert_array_equal(out.candidates[readable], reference)
        with pytest.raises(ImageReadError):                # no zero-shot answer for them
            skipping.predict(folder)
        # the classifier then leaves them out
        with pytest.warns(UserWarning, match="left out"):
            clf = PRODENClassifier(on_bad_image="skip", **SMALL).fit(out)
        assert clf.n_train_samples_ == 9
    finally:
        annotator.set_params(on_bad_image="raise")


def test_sharded_annotation_reports_every_shard_in_the_indices_of_X(annotator, folder):
    from sklearn_npll._vlm.sharding import _WORKER_ANNOTATORS
    from sklearn_npll.distributed import annotate_sharded

    try:
        with pytest.raises(ImageReadError) as info:
            annotate_sharded(annotator, folder, n_shards=4, n_jobs=1)
        assert str(info.value).startswith("3 of 12 images could not be read:")
        assert [i for i, _, _ in info.value.failures] == BAD
        with pytest.warns(UserWarning, match=r"(?s)3 of 12 images.*unlabeled") as caught:
            out = annotate_sharded(annotator.set_params(on_bad_image="skip"), folder,
                                   n_shards=4, n_jobs=1)
        assert [i for w in caught if hasattr(w.message, "failures")
                for i, _, _ in w.message.failures] == BAD
        assert (out.votes[BAD] == -1).all() and (out.candidates[BAD] == 1).all()
    finally:
        annotator.set_params(on_bad_image="raise")
        _WORKER_ANNOTATORS.clear()


def test_annotate_folder_example(annotator, folder, tmp_path, monkeypatch):
    """The example passes the files to the pipeline: one error naming every
    unreadable file, or, with --skip-unreadable, a model of the others."""
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "annotate_folder", pathlib.Path(__file__).parents[1] / "examples" / "annotate_folder.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    root = pathlib.Path(folder[0]).parent
    save_rotated_jpeg(root / "phone.jpg", gradient(40, 60), orientation=6)
    args = [str(root), "--classes", "cat", "dog", "car", "--model-name",
            annotator.model_name, "--pretrained", str(annotator.pretrained),
            "--image-size", "12", "--max-epochs", "2", "--batch-size", "4", "--device", "cpu",
            "--output", str(tmp_path / "pipe.joblib")]
    # 14 files: img0..11.png, img7.jpg and phone.jpg, two of them unreadable
    with pytest.raises(ImageReadError, match=r"(?s)2 of 14 images.*img3.png.*img7.jpg"):
        example.main(args)
    with pytest.warns(UserWarning, match="left out"):
        pipe = example.main(args + ["--skip-unreadable"])
    assert pipe["coreg"].n_train_samples_ == 12
    assert pipe["coreg"].image_size_ == (12, 12)


# ------------------------------------------------------- the reliability table
def _image_cases(root):
    """(case, action) pairs of benchmarks/RELIABILITY.md's "images" section;
    each action returns what the user sees."""
    import torch

    from sklearn_npll.export import load_torch_export, to_onnx, to_torch_export

    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (20, 28)).astype(np.uint16)
    Image.fromarray(values).save(root / "scan16.png")
    Image.fromarray(rng.random((20, 28)).astype(np.float32)).save(root / "scan.tif")
    rotated = save_rotated_jpeg(root / "phone.jpg", gradient(20, 30), orientation=6)
    bad = [str(root / f"ok{i}.png") for i in range(12)]
    for path in bad:
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(path)
    (root / "ok3.png").write_bytes(b"not an image")
    (root / "ok7.png").write_bytes((root / "ok6.png").read_bytes()[:60])
    bad[10] = str(root / "missing.png")
    y = np.arange(12) % 2
    Image.fromarray(gradient(12, 15)).save(root / "large.png")
    Image.fromarray(gradient(20, 20)).save(root / "huge.png")

    def grey(path, expected):
        def action():
            clf = PRODENClassifier(**SMALL).fit([path] * 4, y[:4])
            stored = load_images([path], None)[0].data[0, 0].numpy()
            return (f"fits, sample_shape_ {clf.sample_shape_}; stored pixels "
                    f"{stored.min()}..{stored.max()}, as the rule gives: "
                    f"{np.array_equal(stored, expected)}")
        return action

    def upright():
        clf = PRODENClassifier(**SMALL).fit([rotated] * 4, y[:4])
        stored = load_images([rotated], None)[0].data[0].permute(1, 2, 0).numpy()
        expected = np.asarray(ImageOps.exif_transpose(Image.open(rotated)))
        return f"fits, image_size_ {clf.image_size_}; stored upright: " \
               f"{np.array_equal(stored, expected)}"

    def skipped():
        clf = PRODENClassifier(on_bad_image="skip", **SMALL).fit(bad, y)
        return f"fits on {clf.n_train_samples_} samples"

    def limited(paths):
        def action():
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(Image, "MAX_IMAGE_PIXELS", 150)
                PRODENClassifier(**SMALL).fit(paths, np.arange(len(paths)) % 2)
        return action

    def exported():
        X = gradient(16, 16)[None].repeat(8, 0)
        X[::2, :, :8] = 255
        clf = PRODENClassifier(**SMALL).fit(X, y[:8])
        module, _ = load_torch_export(to_torch_export(clf, root / "m.pt2"))
        to_onnx(clf, root / "m.onnx")
        other = np.stack([gradient(37, 29, seed=s) for s in range(4)])
        x = torch.from_numpy(other.transpose(0, 3, 1, 2).astype(np.float32) / 255)
        logits, proba = module(x)
        gap = np.abs(proba.numpy() - clf.predict_proba(other)).max()
        return (f"exported (ONNX and torch.export); at 37x29 for a model trained at 16x16 "
                f"within 1e-4 of predict_proba: {gap <= 1e-4}; outputs require grad: "
                f"{proba.requires_grad}")

    def annotated(on_bad_image):
        from _common import TINY_CLIP_NAME, save_tiny_clip
        from sklearn_npll.annotate import VLMPartialAnnotator

        def action():
            annotator = VLMPartialAnnotator(
                ["cat", "dog"], model_name=TINY_CLIP_NAME, pretrained=save_tiny_clip(root),
                on_bad_image=on_bad_image)
            out = annotator.fit_transform(bad)
            unread = (out.votes == -1).all(1)
            clf = PRODENClassifier(on_bad_image="skip", **SMALL).fit(out)
            return (f"annotates {len(out)} rows, {unread.sum()} with every class and no "
                    f"vote; the classifier (on_bad_image='skip') fits on "
                    f"{clf.n_train_samples_} samples")
        return action

    return [
        ("16-bit greyscale PNG (Pillow mode I;16)",
         grey(str(root / "scan16.png"), np.round(values / 257).astype(np.uint8))),
        ("32-bit float TIFF in [0, 1] (mode F)",
         grey(str(root / "scan.tif"),
              np.round(np.asarray(Image.open(root / "scan.tif")) * 255).astype(np.uint8))),
        ("JPEG with EXIF Orientation 6 (stored 30 wide, 20 high)", upright),
        ("12 files: not an image, truncated, missing at 3, 7, 10",
         lambda: PRODENClassifier(**SMALL).fit(bad, y)),
        ("the same with on_bad_image='skip'", skipped),
        ("the same 12 files through the annotator", annotated("raise")),
        ("the annotator with on_bad_image='skip', then a classifier", annotated("skip")),
        ("12x15 PNG, PIL.Image.MAX_IMAGE_PIXELS = 150 (warned)",
         limited([str(root / "large.png")] * 2)),
        ("20x20 PNG, PIL.Image.MAX_IMAGE_PIXELS = 150 (refused)",
         limited([str(root / "large.png"), str(root / "huge.png")])),
        ("export, then images of another size than training", exported),
    ]


def test_the_table_of_image_cases_is_current(tmp_path):
    from _table import check_section, outcome

    rows = [(name, outcome(action, paths=(tmp_path,)))
            for name, action in _image_cases(tmp_path)]
    check_section("images", rows)
    assert all(r.startswith(("fits", "ImageReadError", "exported", "annotates"))
               for _, r in rows), rows

"""The annotator's memory on folders of large photos, and JPEG draft decoding."""

import tracemalloc
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from _common import TINY_CLIP_NAME, save_tiny_clip  # noqa: E402
from sklearn_npll import VLMPartialAnnotator  # noqa: E402
from sklearn_npll._vlm import images as _vlm_images  # noqa: E402
from sklearn_npll._vlm.images import ImageSource, draft_size, file_key  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def photos(folder, n, width, height, seed=0):
    """``n`` smooth noisy JPEG photos (sizes on disk like camera files)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, size=(height // 32, width // 32, 3), dtype=np.uint8)
        im = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC),
                        dtype=np.int16)
        im = im + rng.integers(-8, 9, size=(height, width, 1))
        paths.append(folder / f"{i:02d}.jpg")
        Image.fromarray(im.clip(0, 255).astype(np.uint8)).save(paths[-1], quality=92)
    return paths


def make(checkpoint, **params):
    return VLMPartialAnnotator(["cat", "dog"], model_name=TINY_CLIP_NAME,
                               pretrained=checkpoint, **params)


def test_folder_memory_is_bounded_by_the_batch(checkpoint, tmp_path, monkeypatch):
    paths = photos(tmp_path, 36, 1200, 900)
    folder_bytes = sum(p.stat().st_size for p in paths)
    annotator = make(checkpoint, batch_size=4, n_jobs=2).fit()
    live, most_live, sizes = [], [0], []
    to_pil = _vlm_images._EncodedFile.to_pil

    def counted(self):
        im = to_pil(self)
        live[:] = [ref for ref in live if ref() is not None] + [weakref.ref(im)]
        most_live[0] = max(most_live[0], len(live))
        sizes.append(im.size)
        return im

    monkeypatch.setattr(_vlm_images._EncodedFile, "to_pil", counted)
    tracemalloc.start()
    try:
        annotator.transform(paths).candidates
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(sizes) == len(paths)
    # decoded images are dropped once preprocessed: a few alive, never the folder
    assert most_live[0] <= 2 * 4
    # the file bytes held at once are those of a batch or two, not the folder's
    assert peak < folder_bytes / 3, (peak, folder_bytes)


def test_large_jpegs_are_decoded_in_draft_mode_close_to_a_full_decode(checkpoint, tmp_path,
                                                                      monkeypatch):
    (path,) = photos(tmp_path, 1, 1600, 1200, seed=3)
    annotator = make(checkpoint, n_jobs=1).fit()
    side = draft_size(annotator.preprocess_)
    assert side == 32  # open_clip's Resize(32) for the tiny model
    preprocess_224 = open_clip.image_transform(224, is_train=False)
    assert draft_size(preprocess_224) == 224
    assert draft_size(lambda im: im) is None

    decoded = ImageSource([path], draft=side).chunk(0, 1)[0][1].to_pil()
    assert min(decoded.size) >= side and decoded.size == (200, 150)  # 1/8 scale
    full = Image.open(path).convert("RGB")
    for preprocess in (annotator.preprocess_, preprocess_224):
        difference = (preprocess(decoded) - preprocess(full)).abs()
        print(f"mean |draft - full| {difference.mean():.4f}, max {difference.max():.4f}")
        assert difference.mean() < 0.03  # normalised units: one grey level is 0.015

    seen = []
    resize = annotator.preprocess_.transforms[0]
    monkeypatch.setattr(annotator.preprocess_.transforms[0], "forward",
                        lambda im: (seen.append(im.size), type(resize).forward(resize, im))[1])
    from_file = annotator.transform([path]).candidates
    assert seen == [(200, 150)]
    np.testing.assert_array_equal(from_file, annotator.transform([np.asarray(full)]).candidates)
    with torch.inference_mode():
        a = annotator._embed_images([path])[0]
        b = annotator._embed_images([full])[0]
    print(f"cosine of the draft and full-decode embeddings {float(a @ b):.6f}")
    assert float(a @ b) > 0.999
    # draft pixels differ from a full decode, so they are cached under their own key
    data = path.read_bytes()
    assert file_key(data, side) != file_key(data) != file_key(data, 224)

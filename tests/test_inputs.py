"""Tests of the input adapters and the annotated-images container."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from sklearn.model_selection import train_test_split
from sklearn.utils import _safe_indexing
from torch.utils.data import Dataset, TensorDataset

from sklearn_npll._data.annotated import AnnotatedImages
from sklearn_npll._data.image_store import load_images
from sklearn_npll._data.inputs import DatasetImages, InputData, TensorData, as_input_data


def decoded(X):
    """Lists of PIL images and of paths, read as the estimators read them."""
    return load_images(X, image_size=None)[0]

SETTINGS = settings(max_examples=25, deadline=None)


def _rgb(n=4, h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------ arrays / tensors


def test_grey_uint8_array_stays_uint8_channels_first():
    X = np.random.default_rng(0).integers(0, 256, size=(5, 7, 6), dtype=np.uint8)
    data = as_input_data(X)
    assert isinstance(data, TensorData)
    assert data.kind == "images" and data.sample_shape == (1, 7, 6)
    assert data.dtype == torch.uint8 and data.data.element_size() == 1
    np.testing.assert_array_equal(data.data[:, 0].numpy(), X)


def test_channels_last_is_permuted():
    X = _rgb()
    data = as_input_data(X)
    assert data.sample_shape == (3, 6, 5)
    np.testing.assert_array_equal(data.data.numpy(), X.transpose(0, 3, 1, 2))
    assert data.data.is_contiguous()


def test_channels_first_is_kept():
    X = _rgb().transpose(0, 3, 1, 2).copy()
    data = as_input_data(X)
    np.testing.assert_array_equal(data.data.numpy(), X)


def test_rgba_drops_alpha_and_single_channel_last():
    X = np.random.default_rng(0).integers(0, 256, size=(2, 5, 5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(as_input_data(X).data.numpy(),
                                  X[..., :3].transpose(0, 3, 1, 2))
    assert as_input_data(np.zeros((2, 5, 6, 1), np.uint8)).sample_shape == (1, 5, 6)


def test_float_images_in_unit_range_stay_float32():
    X = np.random.default_rng(0).random((3, 4, 4, 3))
    data = as_input_data(X)
    assert data.dtype == torch.float32
    np.testing.assert_allclose(data.data.numpy(), X.transpose(0, 3, 1, 2), rtol=1e-6)


def test_integer_images_in_byte_range_become_uint8():
    X = np.arange(2 * 4 * 4).reshape(2, 4, 4).astype(np.int64)
    data = as_input_data(X)
    assert data.dtype == torch.uint8
    np.testing.assert_array_equal(data.data[:, 0].numpy(), X)


def test_torch_tensors():
    X = torch.from_numpy(_rgb())
    data = as_input_data(X)
    assert data.dtype == torch.uint8 and data.sample_shape == (3, 6, 5)
    np.testing.assert_array_equal(data.data.numpy(), X.numpy().transpose(0, 3, 1, 2))
    assert as_input_data(torch.rand(3, 1, 4, 4)).dtype == torch.float32


def test_feature_matrix_becomes_float32_features():
    for X in (np.arange(12, dtype=np.int64).reshape(4, 3), [[1, 2, 3], [4, 5, 6]],
              torch.ones(4, 3, dtype=torch.float64)):
        data = as_input_data(X)
        assert data.kind == "features" and data.dtype == torch.float32
        assert data.sample_shape == (3,)
    np.testing.assert_array_equal(as_input_data([[1, 2], [3, 4]]).data.numpy(),
                                  [[1, 2], [3, 4]])


@SETTINGS
@given(st.integers(1, 4), st.integers(2, 6), st.integers(2, 6), st.sampled_from([1, 3]),
       st.data())
def test_channels_last_conversion_property(n, h, w, c, data):
    # heights and widths of 2..6 are never read as a channel axis when c in (1, 3)
    # and the axis 1 is h; keep h out of (1, 3) so that the layout is unambiguous
    h = h if h not in (1, 3) else h + 1
    X = data.draw(arrays(np.uint8, (n, h, w, c)))
    out = as_input_data(X)
    assert out.sample_shape == (c, h, w)
    np.testing.assert_array_equal(out.get_batch(np.arange(n)).numpy(),
                                  X.transpose(0, 3, 1, 2))


# ------------------------------------------------------------ lists


def test_pil_modes():
    grey = [Image.new("L", (5, 6), color=i) for i in range(3)]
    data = decoded(grey)
    assert data.sample_shape == (1, 6, 5) and data.dtype == torch.uint8
    np.testing.assert_array_equal(data.data[:, 0, 0, 0].numpy(), [0, 1, 2])
    for mode in ("RGBA", "P", "RGB", "CMYK"):
        assert decoded([Image.new(mode, (5, 6))] * 2).sample_shape == (3, 6, 5)
    mixed = decoded([Image.new("L", (5, 6), 7), Image.new("RGB", (5, 6), (1, 2, 3))])
    assert mixed.sample_shape == (3, 6, 5)
    np.testing.assert_array_equal(mixed.data[:, :, 0, 0].numpy(), [[7, 7, 7], [1, 2, 3]])


def test_pil_pixel_values_preserved():
    X = _rgb(2)
    data = decoded([Image.fromarray(x) for x in X])
    np.testing.assert_array_equal(data.data.numpy(), X.transpose(0, 3, 1, 2))


def test_pil_mixed_sizes_name_the_index():
    images = [Image.new("RGB", (5, 6))] * 3 + [Image.new("RGB", (6, 6))]
    with pytest.raises(ValueError, match=r"2 different sizes \(e\.g\. 6x5 and 6x6"):
        decoded(images)


def test_list_of_arrays():
    X = _rgb(3)
    data = as_input_data(list(X))
    np.testing.assert_array_equal(data.data.numpy(), X.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match=r"Item 2 of X has shape \(4, 4\)"):
        as_input_data([np.zeros((5, 5)), np.zeros((5, 5)), np.zeros((4, 4))])
    with pytest.raises(TypeError, match="item 1"):
        as_input_data([Image.new("L", (2, 2)), np.zeros((2, 2))])


# ------------------------------------------------------------ files


def _write(tmp_path, arrays_, name="img", ext="png"):
    paths = []
    for i, a in enumerate(arrays_):
        p = tmp_path / f"{name}{i}.{ext}"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    return paths


def test_files_keep_their_pixel_values(tmp_path):
    X = _rgb(3)
    paths = _write(tmp_path, X)
    data = decoded(paths)
    assert data.sample_shape == (3, 6, 5) and data.dtype == torch.uint8
    np.testing.assert_array_equal(data.get_batch([2, 0]).numpy(),
                                  X[[2, 0]].transpose(0, 3, 1, 2))


def test_grey_files_and_pathlib(tmp_path):
    X = np.random.default_rng(0).integers(0, 256, size=(2, 4, 4), dtype=np.uint8)
    paths = [tmp_path / p for p in ("a.png", "b.png")]
    for p, a in zip(paths, X):
        Image.fromarray(a).save(p)
    data = decoded(paths)
    assert data.sample_shape == (1, 4, 4)
    np.testing.assert_array_equal(data[1][0].numpy(), X[1])


def test_unreadable_file_names_the_path(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    good = _write(tmp_path, _rgb(1))
    with pytest.raises(ValueError, match=r"broken\.png.*sample 1"):
        decoded(good + [str(bad)])


def test_lists_of_pil_images_and_paths_are_not_read_here(tmp_path):
    with pytest.raises(TypeError, match="load_images"):
        as_input_data([Image.new("L", (2, 2))] * 2)
    with pytest.raises(TypeError, match="load_images"):
        as_input_data(_write(tmp_path, _rgb(1)))


# ------------------------------------------------------------ datasets


class _PILDataset(Dataset):
    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        return Image.new("RGB", self.sizes[i], (i, 0, 0)), i


def test_torch_dataset_of_tuples():
    X = torch.rand(5, 3, 4, 4)
    data = as_input_data(TensorDataset(X, torch.arange(5)))
    assert isinstance(data, DatasetImages)
    assert data.sample_shape == (3, 4, 4) and data.dtype == torch.float32
    torch.testing.assert_close(data.get_batch([4, 1]), X[[4, 1]])


def test_torch_dataset_of_pil_images_and_size_errors():
    data = as_input_data(_PILDataset([(4, 4)] * 3 + [(5, 4)]))
    assert data.sample_shape == (3, 4, 4) and data.dtype == torch.uint8
    assert data[2][0, 0, 0].item() == 2
    with pytest.raises(ValueError, match="Dataset item 3"):
        data[3]


def test_empty_dataset_rejected():
    with pytest.raises(ValueError, match="empty"):
        as_input_data(TensorDataset(torch.zeros(0, 3)))


# ------------------------------------------------------------ get_batch


def test_tensor_get_batch_is_one_index_operation(monkeypatch):
    data = as_input_data(_rgb(6))

    def fail(self, i):
        raise AssertionError("get_batch must not read samples one by one")

    monkeypatch.setattr(TensorData, "__getitem__", fail)
    expected = data.data[[5, 0, 5]]
    for idx in ([5, 0, 5], np.array([5, 0, 5]), torch.tensor([5, 0, 5])):
        torch.testing.assert_close(data.get_batch(idx), expected)
    mask = np.zeros(6, dtype=bool)
    mask[[1, 4]] = True
    torch.testing.assert_close(data.get_batch(mask), data.data[[1, 4]])
    torch.testing.assert_close(data.get_batch(slice(0, 2)), data.data[:2])


def test_generic_get_batch_and_subset():
    data = as_input_data(TensorDataset(torch.arange(12.0).reshape(6, 2)))
    assert data.kind == "features"
    torch.testing.assert_close(data.get_batch([3, -1]),
                               torch.tensor([[6.0, 7.0], [10.0, 11.0]]))
    sub = data.subset([5, 2])
    assert len(sub) == 2 and isinstance(sub, InputData)
    torch.testing.assert_close(sub.get_batch([1]), torch.tensor([[4.0, 5.0]]))
    assert data.get_batch([]).shape == (0, 2)
    with pytest.raises(IndexError, match="out of range"):
        data.get_batch([6])


def test_input_data_passes_through_and_annotated_images_are_unwrapped():
    data = as_input_data(_rgb(2))
    assert as_input_data(data) is data
    annotated = AnnotatedImages(_rgb(2), [[1, 0], [0, 1]], ["a", "b"])
    assert decoded(annotated).sample_shape == (3, 6, 5)


# ------------------------------------------------------------ errors


def test_nan_and_inf_name_the_first_sample():
    X = np.random.default_rng(0).random((6, 4, 4))
    X[4, 1, 2] = np.nan
    X[5, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinity, first in sample 4 of X \(2 samples"):
        as_input_data(X)
    F = np.ones((5, 3))
    F[3, 2] = -np.inf
    with pytest.raises(ValueError, match="first at sample 3, feature 2"):
        as_input_data(F)


def test_float_images_out_of_range():
    X = np.random.default_rng(0).random((4, 3, 5, 5))
    X[2] *= 255
    with pytest.raises(ValueError, match=r"\[0, 1\]; sample 2 of X.*X / 255"):
        as_input_data(X)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5, 6)])
def test_wrong_number_of_dimensions(shape):
    with pytest.raises(ValueError, match=re.escape(f"shape {tuple(shape)}")):
        as_input_data(np.zeros(shape))


def test_ambiguous_channels():
    with pytest.raises(ValueError, match=r"channel axis of X with shape \(2, 5, 5, 5\)"):
        as_input_data(np.zeros((2, 5, 5, 5), np.uint8))


@pytest.mark.parametrize("X", [np.zeros((0, 4, 4)), [], torch.zeros(0, 3)])
def test_empty_input(X):
    with pytest.raises(ValueError, match="empty"):
        as_input_data(X)


def test_other_type_errors():
    with pytest.raises(TypeError, match="single path"):
        as_input_data("image.png")
    with pytest.raises(TypeError, match="list of paths only"):
        as_input_data(["a.png", 3])
    with pytest.raises(ValueError, match="0..255"):
        as_input_data(np.full((2, 4, 4), 300))


# ------------------------------------------------------------ AnnotatedImages


def _annotated(images):
    n = len(images)
    Y = np.zeros((n, 3), dtype=np.uint8)
    Y[np.arange(n), np.arange(n) % 3] = 1
    votes = np.stack([np.arange(n) % 3, -np.ones(n, dtype=int)], axis=1)
    return AnnotatedImages(images, Y, np.array(["a", "b", "c"]), votes)


def test_annotated_images_indexing():
    X = _rgb(6)
    data = _annotated(X)
    assert len(data) == 6 and data.shape == (6, 6, 5, 3)
    sub = data[np.array([4, 1])]
    np.testing.assert_array_equal(sub.images, X[[4, 1]])
    np.testing.assert_array_equal(sub.candidates, data.candidates[[4, 1]])
    np.testing.assert_array_equal(sub.votes, data.votes[[4, 1]])
    assert sub.classes is data.classes
    assert len(data[1:4]) == 3 and len(data[data.candidates[:, 0] == 1]) == 2
    assert len(data[np.array([0, 1]), ...]) == 2  # how scikit-learn indexes arrays
    taken = _safe_indexing(data, [5, 0])
    assert isinstance(taken, AnnotatedImages) and len(taken) == 2


@pytest.mark.parametrize(
    "make_images",
    [
        lambda X, tmp: [Image.fromarray(x) for x in X],
        lambda X, tmp: torch.from_numpy(X),
        lambda X, tmp: TensorDataset(torch.from_numpy(X)),
        lambda X, tmp: as_input_data(X),
        lambda X, tmp: _write(tmp, X),
    ],
)
def test_annotated_images_split_any_image_kind(make_images, tmp_path):
    X = _rgb(6)
    data = _annotated(make_images(X, tmp_path))
    train, test = train_test_split(data, test_size=2, random_state=0)
    assert isinstance(train, AnnotatedImages) and len(train) == 4 and len(test) == 2
    idx = [int(np.flatnonzero((X == x).all(axis=(1, 2, 3)))[0])
           for x in decoded(test).get_batch(np.arange(2)).numpy().transpose(0, 2, 3, 1)]
    np.testing.assert_array_equal(test.candidates, data.candidates[idx])


def test_annotated_images_validation():
    with pytest.raises(ValueError, match="3 images but 2 candidate sets"):
        AnnotatedImages(np.zeros((3, 4, 4)), np.eye(2), ["a", "b"])
    with pytest.raises(ValueError, match=r"votes must have shape \(2, n_voters\)"):
        AnnotatedImages(np.zeros((2, 4, 4)), np.eye(2), ["a", "b"], votes=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="no candidate"):
        AnnotatedImages(np.zeros((2, 4, 4)), [[1, 0], [0, 0]], ["a", "b"])
    data = AnnotatedImages(["x.png", "y.png"], [[1, 0], [1, 1]], ["a", "b"])
    assert data.shape == (2,) and "n_samples=2" in repr(data)

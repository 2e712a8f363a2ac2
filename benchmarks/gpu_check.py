"""One prepared check of every CUDA path of the library, on one GPU, in under 8 minutes.

Prints one table (a line per check: name, status, figure, what ran, seconds)
and writes it as JSON (``--json``, by default ``benchmarks/_runs/gpu_check.json``,
which git ignores). Every check is isolated: one that fails records the last
line of its traceback and the others go on. A time budget (``--budget``,
480 s) skips the checks that would overrun it, with the reason. The exit
status is 1 when a check failed, or when (without ``--smoke``) torch sees no
CUDA device: then only ``environment`` runs. Nothing is downloaded.

Checks (on CUDA; see ``--smoke`` for the CPU):

- ``environment``: versions, the GPU, the packages that must be carried as
  wheels (skorch, open_clip) and the optional ones (onnx, onnxruntime);
- ``fit-<method>-<precision>``: Co-Reg, PRODEN and CC on scikit-learn's
  bundled digits upsampled to 32 px (so the default encoder is PreAct
  ResNet-18), q=0.1, eta=0.1, in fp32, bf16 and fp16: every loss finite,
  the encoder ran in the precision asked for, every fp16 step went through
  the ``GradScaler`` (``torch.amp.GradScaler`` is replaced by a subclass that
  counts ``step`` calls and the updates that lowered the scale, i.e. skipped
  steps) and the low-precision test accuracy within ``ACC_TOLERANCE`` of
  fp32 on the same seed (fp32 must reach ``ACC_FLOOR``, so that the
  comparison means something);
- ``device-store``: the same PRODEN fit with the training images on the GPU
  (``device_store=True``) and through pinned memory (``False``), cuDNN
  deterministic: the same input batches, the same predictions (tolerance),
  and the store really on the GPU (allocated memory at the first epoch);
- ``store-decision``: with a block of GPU memory held so that about 4 GiB
  stay free, ``device_store="auto"`` puts a store of a quarter of the free
  memory on the GPU and keeps one of three quarters in host memory (seen in
  the allocated memory at the first epoch; the fit stops after one batch);
- ``channels-last``: a ResNet fit on CUDA has channels_last convolution
  weights and inputs; an MLP on feature vectors trains and predicts with
  plain 2-D tensors;
- ``annotator-precision``: a tiny random open_clip checkpoint made here:
  image embeddings on CUDA in fp16 (``precision="auto"``) against the CPU in
  fp32 (cosine >= 0.999 for every image), and the two precisions under
  different cache keys (two cache folders);
- ``pickle-cpu-child``: a Co-Reg model trained on CUDA (``precision="auto"``)
  pickled, loaded and used to predict in a child process that sees no GPU;
- ``onnx-export``: ``sklearn_npll.export.to_onnx`` of that model, run by
  onnxruntime on the CPU, against the child's ``predict_proba``;
- ``ddp-nccl``: the data-parallel fit of ``tests/_ddp_fit.py`` under
  ``torchrun`` with NCCL, one process per GPU, at most 2 (one GPU: a
  single-rank group, compared with one process); ``ddp-gloo``: two gloo ranks on CUDA tensors
  with the ranks-agree checks of the CPU test; ``ddp-syncbn``: NCCL with
  SyncBatchNorm (needs 2 GPUs);
- ``throughput-train``: images per second of a supervised epoch (CC on the
  true labels, no augmentation: forward + backward of each batch) and of a
  Co-Reg co-training epoch with the contrastive term on (labeled images of
  the steps of both networks per second), 32 px, batch 256, PreAct
  ResNet-18, bf16; their ratio against the method's arithmetic in
  ``benchmarks/COST.md`` (8.7 plain batches per step) and its target
  (<= 12x); Co-Reg's warm-up images per second; peak GPU memory;
- ``suite-time``: from those figures, the hours a cell of
  ``run.py --suite gpu`` takes at most on this GPU, and the whole suite;
- ``throughput-annotator``: ``VLMPartialAnnotator`` images per second on a
  ViT-B-32 with random weights in fp16 (224 px after preprocessing), and the
  image tower alone on preprocessed batches.

``--smoke`` runs the same script on the CPU at a tiny size (coloured squares
at 8 px, SmallCNN): the CUDA-only checks are printed as skipped with the reason; the
fp32 and bf16 fits (CPU autocast), the pickle to a CPU-only child process,
the ONNX parity, the tiny annotator (fp16 autocast on the CPU against fp32),
both throughput measurements and the suite estimate run for real. fp16 fits
(CPU autocast runs convolutions about 20x slower than fp32) and the gloo
torchrun (``--smoke --only ddp-gloo`` runs it; the CPU test runs the same
checks) are skipped with the reason.

Examples
--------
python benchmarks/gpu_check.py
python benchmarks/gpu_check.py --json gpu_check.json --only fit-coreg-fp32 throughput-train
python benchmarks/gpu_check.py --smoke
"""

import argparse
import contextlib
import json
import math
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[1:1] = [str(HERE), str(ROOT)]

# ---------------------------------------------------------------------------
# What this script uses beyond the public API, in one place (imported lazily,
# so that a missing dependency fails a check, not the run):
#   tests/_ddp_fit.py                  the data-parallel fit of the CPU test
#                                      (it imports sklearn_npll._nn.backbones.SmallCNN)
# benchmarks/annotator_throughput.py (random open_clip checkpoints) imports
# sklearn_npll._vlm.cache.model_digests.


def annotator_embeddings(annotator, images):
    """Normalised image embeddings, as a fitted annotator computes them."""
    return annotator.embed(images)


def ddp_fit():
    """The shared data-parallel fit module of the tests."""
    sys.path.insert(0, str(ROOT / "tests"))
    import _ddp_fit

    return _ddp_fit
# ---------------------------------------------------------------------------

BUDGET_SECONDS = 480
ACC_TOLERANCE = 0.05   # low-precision test accuracy vs fp32, absolute
ACC_FLOOR = 0.5        # fp32 test accuracy needed (chance: 0.1)
SKIPPED_SHARE = 0.25   # fp16: most steps must be applied, not skipped by the scaler
COST_ARITHMETIC = 8.7  # plain batches per Co-Reg step, contrastive on (COST.md)
COST_TARGET = 12.0     # ratio target of COST.md
COSINE_MIN = 0.999
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]

# Sizes per mode. "cuda": the real check; "smoke": the same code on the CPU.
SIZES = {
    "cuda": dict(upsample=4, n_train=None, n_test=None, batch=64, lr=0.05, width=None,
                 coreg_epochs=20, warmup=12, start_contrastive=1, baseline_epochs=20,
                 queue=None, store_n=2048, store_epochs=2, store_free_gib=4.0,
                 tp_n=16384, tp_size=32, tp_batch=256, tp_precision="bf16",
                 tp_sup_epochs=5, tp_coreg_epochs=6, annot_model="ViT-B-32",
                 annot_n=4096, annot_batch=256, tower_batches=20, gloo_ranks=2),
    "smoke": dict(upsample=None, n_train=300, n_test=300, batch=32, lr=0.1, width=8,
                  coreg_epochs=10, warmup=9, start_contrastive=0, baseline_epochs=10,
                  queue=32, store_n=0, store_epochs=0, store_free_gib=0.0,
                  tp_n=128, tp_size=8, tp_batch=32, tp_precision="fp32",
                  tp_sup_epochs=3, tp_coreg_epochs=4, annot_model=None,
                  annot_n=128, annot_batch=64, tower_batches=2, gloo_ranks=1),
}


# ------------------------------------------------------------------ results
class Skip(Exception):
    """Raised by a check that cannot run here; the message is the reason."""


class Failed(Exception):
    """Raised by a check whose figures miss a criterion; the message says which."""


class Run:
    """What every check works with: mode, device, sizes, a scratch folder, and
    a memo of results that several checks share (a trained model, ...)."""

    def __init__(self, smoke, workdir):
        import torch

        self.smoke = smoke
        self.cuda = torch.cuda.is_available() and not smoke
        self.device = "cuda" if self.cuda else "cpu"
        self.size = SIZES["smoke" if smoke else "cuda"]
        self.workdir = Path(workdir)
        self.memo = {}
        self.fits = {}
        self.remaining = lambda: 600.0   # seconds left of the budget (set by run_all)
        self.only = set()                # the checks named by --only

    def shared(self, key, make):
        """``make()`` once per run; a failure is remembered and raised again."""
        if key not in self.memo:
            try:
                self.memo[key] = ("ok", make())
            except Exception as exc:  # noqa: BLE001 - re-raised to every user
                self.memo[key] = ("error", exc)
        status, value = self.memo[key]
        if status == "error":
            raise value
        return value

    def needs_cuda(self, what=""):
        if not self.cuda:
            raise Skip("no CUDA device" + (" (--smoke runs on the CPU)" if self.smoke else "")
                       + (f": {what}" if what else ""))

    def child_env(self, **extra):
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path, **extra}


def last_line(exc):
    """The last line of a traceback (``Type: message``), on one line."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return " ".join(text.split())[:400] or type(exc).__name__


def run_check(run, name, fn):
    """Run one check; return its row (never raises)."""
    start = time.perf_counter()
    ran = figure = reason = ""
    data = {}
    try:
        ran, figure, data = fn(run)
        status = "pass"
    except Skip as exc:
        status, reason = "skipped", str(exc)
    except Failed as exc:
        status, reason = "fail", exc.args[0]
        ran, figure, data = exc.args[1:]
    except Exception as exc:  # noqa: BLE001 - one failing check must not stop the others
        status, reason = "fail", last_line(exc)
    seconds = time.perf_counter() - start
    return {"name": name, "status": status, "figure": figure, "ran": ran, "reason": reason,
            "seconds": round(seconds, 2), "data": data}


def judge(problems, ran, figure, data=None):
    """``(ran, figure, data)`` when ``problems`` is empty; else raise ``Failed``."""
    if problems:
        raise Failed("; ".join(problems), ran, figure, data or {})
    return ran, figure, data or {}


# --------------------------------------------------------------------- data
def digits(run):
    """scikit-learn's bundled digits, upsampled (8 px -> 32 px)."""
    from data import load_digits_data

    s = run.size
    X, y, X_test, y_test, _, _ = load_digits_data(n_train=s["n_train"], n_test=s["n_test"])
    up = s["upsample"]
    X, X_test = (a.repeat(up, axis=1).repeat(up, axis=2) for a in (X, X_test))
    return X, y, X_test, y_test


def patch_images(n, size, n_classes=10, seed=0):
    """``n`` RGB images of noise with a square of the class's colour (10
    distinct colours) at a random place; learnt in a few epochs."""
    rng = np.random.default_rng(seed)
    levels = np.array([(r, g, b) for r in (0, 128, 255) for g in (0, 128, 255)
                       for b in (0, 128, 255)], dtype=np.uint8)
    palette = levels[np.linspace(1, 26, n_classes).round().astype(int)]
    y = np.arange(n) % n_classes
    X = rng.integers(0, 60, size=(n, size, size, 3), dtype=np.uint8)
    side = size // 2
    rows, cols = rng.integers(0, size - side + 1, (2, n))
    for i in range(n):
        X[i, rows[i]:rows[i] + side, cols[i]:cols[i] + side] = palette[y[i]]
    return X, y


def fit_data(run):
    """The fits' data: the bundled digits upsampled to 32 px on CUDA (PreAct
    ResNet-18); coloured squares at 8 px for the smoke run (SmallCNN)."""
    if run.cuda:
        return digits(run)
    X, y = patch_images(run.size["n_train"], 8)
    X_test, y_test = patch_images(run.size["n_test"], 8, seed=1)
    return X, y, X_test, y_test


def partial(y, seed=0):
    from sklearn_npll import make_partial_labels

    return make_partial_labels(y, 0.1, 0.1, n_classes=10, random_state=seed)


def model_input(X):
    """Images as the exported model takes them: float32 (N, C, H, W) in [0, 1]."""
    X = X[:, None] if X.ndim == 3 else X.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(X, dtype=np.float32) / 255.0


def sync(run):
    import torch

    if run.cuda:
        torch.cuda.synchronize()


def peak_gib(run):
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if run.cuda else None


# ------------------------------------------------------------- estimators
def probe_callback():
    """A skorch callback that records, during training, the dtype of the
    first convolution's output and whether its input was channels_last."""
    import torch
    from skorch.callbacks import Callback
    from torch import nn

    class ConvProbe(Callback):
        def initialize(self):
            self.dtypes, self.channels_last, self.handle = set(), set(), None
            return self

        def on_train_begin(self, net, **kwargs):
            conv = next((m for m in net.module_.encoder.modules()
                         if isinstance(m, nn.Conv2d)), None)
            if conv is not None:
                self.handle = conv.register_forward_hook(self.record)

        def record(self, module, args, output):
            x = args[0]
            self.dtypes.add(str(output.dtype).replace("torch.", ""))
            self.channels_last.add(bool(x.is_contiguous(memory_format=torch.channels_last)
                                        and not x.is_contiguous()))

        def on_train_end(self, net, **kwargs):
            if self.handle is not None:
                self.handle.remove()
                self.handle = None

    return ConvProbe()


def estimator(run, method, precision="fp32", epochs=None, callbacks=(), **extra):
    """A Co-Reg, PRODEN or CC classifier sized for this run."""
    from sklearn_npll import CCClassifier, CoRegClassifier, PRODENClassifier

    s = run.size
    common = dict(batch_size=s["batch"], lr=s["lr"], precision=precision, device=run.device,
                  random_state=0, flip=False, verbose=0, callbacks=list(callbacks) or None)
    if s["width"]:
        common["module__width"] = s["width"]
    if method == "coreg":
        if s["queue"]:
            common.update(queue_size=s["queue"], proj_dim=8)
        common.update(max_epochs=epochs or s["coreg_epochs"], warmup_epochs=s["warmup"],
                      start_contrastive=s["start_contrastive"])
        return CoRegClassifier(**{**common, **extra})
    cls = {"proden": PRODENClassifier, "cc": CCClassifier}[method]
    return cls(**{**common, "max_epochs": epochs or s["baseline_epochs"], **extra})


@contextlib.contextmanager
def counting_grad_scaler():
    """Replace ``torch.amp.GradScaler`` by a subclass that counts ``step``
    calls and the updates that lowered the scale (skipped steps)."""
    import torch

    counts = {"steps": 0, "skipped": 0, "scale": None}
    original = torch.amp.GradScaler

    class CountingScaler(original):
        def step(self, optimizer, *args, **kwargs):
            counts["steps"] += 1
            return super().step(optimizer, *args, **kwargs)

        def update(self, new_scale=None):
            before = self.get_scale()
            super().update(new_scale)
            counts["scale"] = self.get_scale()
            counts["skipped"] += counts["scale"] < before

    torch.amp.GradScaler = CountingScaler
    try:
        yield counts
    finally:
        torch.amp.GradScaler = original


def finite_losses(clf):
    """Whether every logged loss of every epoch is finite; the last train loss."""
    values = [row[k] for row in clf.history for k in row
              if "loss" in k and isinstance(row[k], (int, float))]
    return all(math.isfinite(v) for v in values), float(clf.history[-1, "train_loss"])


def autocast_available(precision):
    """Whether this machine's autocast supports ``precision`` on the CPU."""
    import torch
    from torch import nn

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    try:
        with torch.autocast("cpu", dtype=dtype):
            return nn.Linear(2, 2)(torch.ones(1, 2)).dtype == dtype
    except RuntimeError:
        return False


# --------------------------------------------------------------------- fits
def fit_once(run, method, precision):
    """One fit on the run's data (see ``fit_data``); its figures."""
    X, y, X_test, y_test = run.shared("fit_data", lambda: fit_data(run))
    probe = probe_callback()
    clf = estimator(run, method, precision, callbacks=[("probe", probe)])
    with counting_grad_scaler() as scaler:
        clf.fit(X, partial(y))
    finite, last = finite_losses(clf)
    return {"accuracy": float(np.mean(clf.predict(X_test) == y_test)), "finite": finite,
            "last_loss": last, "epochs": len(clf.history), "dtypes": sorted(probe.dtypes),
            "batches": int(sum(clf.history[:, "train_batch_count"])), **scaler,
            "encoder": type(clf.module_.encoder).__name__, "shape": X.shape[1:]}


def fit_check(method, precision):
    """The check of one (method, precision) fit."""
    expected = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]

    def check(run):
        if precision == "fp16" and not run.cuda:
            raise Skip("fp16 on the CPU: autocast runs the convolutions about 20x slower than "
                       "fp32 here (tests/test_device_feeding.py checks its GradScaler path)")
        if precision != "fp32" and not run.cuda and not autocast_available(precision):
            raise Skip(f"no {precision} autocast on this CPU")
        reference = None
        if precision != "fp32":
            reference = run.fits.get((method, "fp32"))
            if reference is None:
                raise Skip(f"no fp32 fit of {method} to compare with (see its line)")
        r = run.fits[method, precision] = fit_once(run, method, precision)
        data_name = "digits" if run.cuda else "coloured squares"
        ran = (f"{method} on {run.device}, {precision}, {r['encoder']} on {r['shape']} "
               f"{data_name}, {r['epochs']} epochs, {r['batches']} steps")
        figure = (f"test acc {r['accuracy']:.3f}; losses finite: {r['finite']} (last "
                  f"{r['last_loss']:.3g}); encoder output {'/'.join(r['dtypes'])}")
        problems = [] if r["finite"] else ["a loss is not finite"]
        if r["dtypes"] != [expected]:
            problems.append(f"encoder ran in {r['dtypes']}, not {expected}")
        if precision == "fp16":
            figure += (f"; {r['steps']}/{r['batches']} steps through the scaler, "
                       f"{r['skipped']} skipped, final scale {r['scale']:g}")
            if r["steps"] != r["batches"]:
                problems.append("not every step went through the GradScaler")
            if r["skipped"] > SKIPPED_SHARE * r["batches"]:
                problems.append(f"the scaler skipped more than {SKIPPED_SHARE:.0%} of steps")
        if reference is None:
            if r["accuracy"] < ACC_FLOOR:
                problems.append(f"fp32 accuracy below {ACC_FLOOR}: nothing to compare")
        else:
            gap = r["accuracy"] - reference["accuracy"]
            figure += f"; vs fp32 {gap:+.3f} (tolerance {ACC_TOLERANCE})"
            if abs(gap) > ACC_TOLERANCE:
                problems.append(f"accuracy {gap:+.3f} away from fp32")
        data = {k: v for k, v in r.items() if k != "shape"}
        return judge(problems, ran, figure, data)

    return check


# --------------------------------------------------- device store, layout
def batch_recorder(stop_after_first=False):
    """A skorch callback recording the sum of every training batch's inputs
    (as the estimator feeds them, before augmentation) and the GPU memory
    allocated when the first epoch begins; optionally it stops the fit after
    the first batch (the estimator ends a fit on ``KeyboardInterrupt``)."""
    import torch
    from skorch.callbacks import Callback

    class BatchRecorder(Callback):
        def initialize(self):
            self.sums, self.allocated = [], None
            return self

        def on_epoch_begin(self, net, **kwargs):
            if self.allocated is None:
                self.allocated = torch.cuda.memory_allocated()

        def on_batch_begin(self, net, batch=None, training=False, **kwargs):
            if training:
                self.sums.append(int(batch[0].sum()))

        def on_batch_end(self, net, training=False, **kwargs):
            if training and stop_after_first:
                raise KeyboardInterrupt

    return BatchRecorder()


@contextlib.contextmanager
def deterministic_cudnn():
    import torch

    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def device_store_check(run):
    """The training store on the GPU against pinned batches: same inputs, same predictions."""
    run.needs_cuda("the device store and the pinned path are CUDA paths")
    import torch

    s = run.size
    X, y = patch_images(s["store_n"], 32)
    X_test, _ = patch_images(512, 32, seed=1)
    Y, out = partial(y), {}
    with deterministic_cudnn():
        for store in (True, False):
            recorder = batch_recorder()
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated()
            clf = estimator(run, "proden", epochs=s["store_epochs"], device_store=store,
                            batch_size=256, callbacks=[("recorder", recorder)]).fit(X, Y)
            out[store] = (recorder.sums, recorder.allocated - before, clf.predict_proba(X_test))
    (sums_a, extra_a, p_a), (sums_b, extra_b, p_b) = out[True], out[False]
    agree = float(np.mean(p_a.argmax(1) == p_b.argmax(1)))
    gap = float(np.abs(p_a - p_b).max())
    on_gpu = (extra_a - extra_b) / X.nbytes
    ran = (f"PRODEN fp32, {len(X)} images 32 px, {s['store_epochs']} epochs, cuDNN "
           "deterministic, device_store=True vs False")
    figure = (f"{len(sums_a)} input batches, identical: {sums_a == sums_b}; predictions agree "
              f"{agree:.3f}, max |dp| {gap:.2g}; memory at epoch 1: store run +"
              f"{on_gpu:.2f}x the store's {X.nbytes / 2**20:.1f} MiB over the pinned run")
    problems = []
    if sums_a != sums_b:
        problems.append("the two paths fed different batches")
    if agree < 0.98 or gap > 0.05:
        problems.append("predictions differ beyond tolerance (agreement >= 0.98, |dp| <= 0.05)")
    if not 0.9 <= on_gpu <= 1.5:
        problems.append("the store run did not hold the store on the GPU")
    data = {"agreement": agree, "max_proba_gap": gap, "store_share_on_gpu": on_gpu}
    return judge(problems, ran, figure, data)


def store_fit(run, n):
    """A fit (stopped after one batch) on ``n`` images with device_store="auto";
    the GPU memory it added by its first epoch."""
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()   # what earlier fits left cached is free again

    block = patch_images(1024, 32)[0].transpose(0, 3, 1, 2)
    X = np.empty((n, 3, 32, 32), dtype=np.uint8)  # (N, C, H, W): stored as given
    for start in range(0, n, len(block)):
        X[start:start + len(block)] = block[:n - start]
    Y = partial(np.resize(np.arange(10), n))
    recorder = batch_recorder(stop_after_first=True)
    before = torch.cuda.memory_allocated()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # "Training was interrupted"
        estimator(run, "proden", epochs=1, batch_size=256,
                  callbacks=[("recorder", recorder)]).fit(X, Y)
    del X
    return recorder.allocated - before


def store_decision_check(run):
    """device_store="auto" follows the free GPU memory (a held block leaves ~4 GiB)."""
    run.needs_cuda("the store decision reads the GPU's free memory")
    import torch

    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info()[0]
    target = int(run.size["store_free_gib"] * 2**30)
    if free < target + 2**30:
        raise Skip(f"only {free / 2**30:.1f} GiB free")
    held = torch.empty(free - target, dtype=torch.uint8, device="cuda")
    try:
        free_now = torch.cuda.mem_get_info()[0]
        rows = {}
        for share in (0.25, 0.75):
            n = int(share * free_now) // (3 * 32 * 32)
            rows[share] = (n * 3 * 32 * 32, store_fit(run, n))
    finally:
        del held
        torch.cuda.empty_cache()
    (small, added_small), (large, added_large) = rows[0.25], rows[0.75]
    gib = 2**30
    ran = (f"{free_now / gib:.2f} GiB left free by a held block; PRODEN fits (one batch) with "
           "device_store='auto' on stores of 1/4 and 3/4 of it")
    figure = (f"store {small / gib:.2f} GiB: +{added_small / gib:.2f} GiB on the GPU at epoch 1;"
              f" store {large / gib:.2f} GiB: +{added_large / gib:.2f} GiB")
    problems = []
    if added_small < small:
        problems.append("the small store did not go to the GPU")
    if added_large >= 0.5 * large:
        problems.append("the large store went to the GPU")
    data = {"free_gib": free_now / gib, "small_store_gib": small / gib,
            "small_added_gib": added_small / gib, "large_store_gib": large / gib,
            "large_added_gib": added_large / gib}
    return judge(problems, ran, figure, data)


def channels_last_check(run):
    """channels_last for a convolutional encoder on CUDA, plain tensors for an MLP."""
    run.needs_cuda("channels_last is used on CUDA only")
    import torch
    from torch import nn

    X, y = patch_images(512, 32)
    probe = probe_callback()
    cnn = estimator(run, "proden", epochs=1, callbacks=[("probe", probe)]).fit(X, partial(y))
    conv = next(m for m in cnn.module_.encoder.modules() if isinstance(m, nn.Conv2d))
    weight_cl = bool(conv.weight.is_contiguous(memory_format=torch.channels_last)
                     and not conv.weight.is_contiguous())
    features = np.random.default_rng(0).normal(size=(512, 64)).astype(np.float32)
    mlp = estimator(run, "proden", epochs=1).fit(features, partial(y))
    mlp_params = list(mlp.module_.parameters())
    plain = all(p.is_contiguous() for p in mlp_params)
    four_d = sum(p.dim() == 4 for p in mlp_params)
    proba = mlp.predict_proba(features)
    ran = (f"PRODEN 1 epoch: {type(cnn.module_.encoder).__name__} on 32 px images; "
           f"{type(mlp.module_.encoder).__name__} on 64 features")
    figure = (f"conv weights channels_last: {weight_cl}, training inputs channels_last: "
              f"{sorted(probe.channels_last)}; MLP: {len(mlp_params)} parameters contiguous: "
              f"{plain}, 4-D: {four_d}, predictions finite: {bool(np.isfinite(proba).all())}")
    problems = []
    if not weight_cl or probe.channels_last != {True}:
        problems.append("the convolutional encoder is not channels_last")
    if not plain or four_d or not np.isfinite(proba).all():
        problems.append("the MLP is not in plain layout or does not predict")
    return judge(problems, ran, figure)


# ---------------------------------------------------------------- annotator
def tiny_clip(run):
    """A tiny random open_clip checkpoint made here: (model name, path)."""
    from annotator_throughput import tiny_checkpoint

    folder = run.workdir / "tiny_clip"
    folder.mkdir(exist_ok=True)
    return tiny_checkpoint(folder)


def annotator_precision_check(run):
    """Low-precision embeddings (CUDA fp16) against CPU fp32; cache keys apart."""
    from sklearn_npll import VLMPartialAnnotator

    name, path = run.shared("tiny_clip", lambda: tiny_clip(run))
    if run.cuda:
        device, precision, expected = "cuda", "auto", "fp16"
    else:
        expected = next((p for p in ("fp16", "bf16") if autocast_available(p)), None)
        if expected is None:
            raise Skip("no fp16 or bf16 autocast on this CPU")
        device, precision = "cpu", expected
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    cache = run.workdir / "annotator_cache"

    def embed(**params):
        annotator = VLMPartialAnnotator(CIFAR10, model_name=name, pretrained=path,
                                        cache_dir=cache, batch_size=32, **params).fit()
        return annotator, annotator_embeddings(annotator, images)

    ref, e_ref = embed(device="cpu", precision="fp32")
    folders_before = sum(p.is_dir() for p in cache.iterdir())
    low, e_low = embed(device=device, precision=precision)
    folders_after = sum(p.is_dir() for p in cache.iterdir())
    cosine = (e_ref * e_low).sum(1) / (np.linalg.norm(e_ref, axis=1)
                                      * np.linalg.norm(e_low, axis=1))
    ran = (f"tiny random open_clip checkpoint, 64 images: {device} precision={precision!r} "
           f"against cpu fp32, one cache folder")
    figure = (f"resolved {low.precision_}; min cosine {cosine.min():.8f} (>= {COSINE_MIN}); "
              f"differs from fp32: {not np.array_equal(e_ref, e_low)}; keys "
              f"{ref.model_key_[:8]} / {low.model_key_[:8]}; cache folders {folders_before} -> "
              f"{folders_after}")
    problems = []
    if low.precision_ != expected:
        problems.append(f"precision resolved to {low.precision_}, not {expected}")
    if cosine.min() < COSINE_MIN or np.array_equal(e_ref, e_low):
        problems.append("embeddings too far from fp32, or not computed at low precision")
    if ref.model_key_ == low.model_key_ or folders_after <= folders_before:
        problems.append("the two precisions share a cache key")
    return judge(problems, ran, figure, {"min_cosine": float(cosine.min())})


def throughput_annotator_check(run):
    """VLMPartialAnnotator images per second (ViT-B-32, random weights, fp16 on CUDA)."""
    import torch
    from PIL import Image

    from annotator_throughput import annotate, random_checkpoint
    from sklearn_npll import VLMPartialAnnotator

    s = run.size
    if s["annot_model"]:
        name = s["annot_model"]
        folder = run.workdir / "random_clip"
        folder.mkdir(exist_ok=True)
        path = random_checkpoint(folder, name)
    else:
        name, path = run.shared("tiny_clip", lambda: tiny_clip(run))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (s["annot_n"], 32, 32, 3), dtype=np.uint8)
    warm = rng.integers(0, 256, (s["annot_batch"], 32, 32, 3), dtype=np.uint8)
    annotator = VLMPartialAnnotator(CIFAR10, model_name=name, pretrained=path,
                                    batch_size=s["annot_batch"], device=run.device).fit()
    annotate(annotator, warm)
    if run.cuda:
        torch.cuda.reset_peak_memory_stats()
    sync(run)
    start = time.perf_counter()
    annotate(annotator, images)
    sync(run)
    rate = len(images) / (time.perf_counter() - start)
    peak = peak_gib(run)
    batch = torch.stack([annotator.preprocess_(Image.fromarray(im)) for im in warm])
    tower = tower_rate(run, annotator, batch, s["tower_batches"])
    ran = (f"{name} ({'random weights' if s['annot_model'] else 'tiny random checkpoint'}) "
           f"on {run.device}, {annotator.precision_}, {len(images)} random 32 px images -> "
           f"{tuple(batch.shape[2:])} px, batch {s['annot_batch']}, "
           f"{len(annotator.templates_)} templates x {len(CIFAR10)} classes")
    figure = (f"annotate {rate:,.0f} img/s; image tower alone {tower:,.0f} img/s"
              + ("" if peak is None else f"; peak GPU memory {peak:.2f} GiB"))
    problems = []
    if run.cuda and annotator.precision_ != "fp16":
        problems.append(f"precision resolved to {annotator.precision_}, not fp16")
    if not (rate > 0 and tower > 0):
        problems.append("no throughput measured")
    data = {"annotate_img_per_s": rate, "tower_img_per_s": tower, "peak_gib": peak}
    return judge(problems, ran, figure, data)


def tower_rate(run, annotator, batch, repeats):
    """Images per second of the image tower alone on one preprocessed batch."""
    import torch

    device = torch.device(run.device)
    context = (contextlib.nullcontext() if annotator.precision_ == "fp32" else
               torch.autocast(device.type, dtype={"fp16": torch.float16,
                                                  "bf16": torch.bfloat16}[annotator.precision_]))
    x = batch.to(device)
    with torch.inference_mode(), context:
        annotator.model_.encode_image(x)            # warm-up
        sync(run)
        start = time.perf_counter()
        for _ in range(repeats):
            annotator.model_.encode_image(x)
        sync(run)
    return repeats * len(x) / (time.perf_counter() - start)


# ------------------------------------------------------ pickle, ONNX export
def child_predict(pickled, inputs, out):
    """In a child process: load a pickled estimator, predict, save the figures."""
    import torch

    with open(pickled, "rb") as f:
        clf = pickle.load(f)
    np.save(out, clf.predict_proba(np.load(inputs)))
    Path(out).with_suffix(".json").write_text(json.dumps(
        {"cuda_available": torch.cuda.is_available(), "device_": str(clf.device_)}))
    return 0


def trained_and_reloaded(run):
    """Co-Reg trained on the run's device (precision "auto"), pickled, then
    loaded and used to predict by a child process that sees no GPU."""
    X, y, X_test, _ = run.shared("fit_data", lambda: fit_data(run))
    clf = estimator(run, "coreg", "auto", epochs=3, warmup_epochs=1,
                    start_contrastive=0).fit(X, partial(y))
    pickled, inputs, out = (run.workdir / name for name in ("model.pkl", "x.npy", "p.npy"))
    pickled.write_bytes(pickle.dumps(clf))
    np.save(inputs, X_test)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child-predict",
                           str(pickled), str(inputs), str(out)],
                          env=run.child_env(CUDA_VISIBLE_DEVICES=""), capture_output=True,
                          text=True, timeout=max(60, run.remaining()))
    if done.returncode:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"the CPU-only child failed: {tail[0]}")
    return {"clf": clf, "X_test": X_test, "proba": clf.predict_proba(X_test),
            "child_proba": np.load(out), "child": json.loads(out.with_suffix(".json")
                                                          .read_text()),
            "pickle_bytes": pickled.stat().st_size, "child_seconds": time.perf_counter() - start}


def pickle_check(run):
    """A model trained on the GPU predicts in a CPU-only process."""
    m = run.shared("reloaded", lambda: trained_and_reloaded(run))
    clf, child = m["clf"], m["child"]
    agree = float(np.mean(m["proba"].argmax(1) == m["child_proba"].argmax(1)))
    gap = float(np.abs(m["proba"] - m["child_proba"]).max())
    ran = (f"Co-Reg trained on {clf.device_} ({clf.precision_}), pickled "
           f"({m['pickle_bytes'] / 2**20:.1f} MiB), loaded by a child process with "
           "CUDA_VISIBLE_DEVICES=''")
    figure = (f"child: CUDA available {child['cuda_available']}, device_ {child['device_']}, "
              f"{m['child_seconds']:.1f} s; predictions agree {agree:.3f}, max |dp| {gap:.2g}")
    problems = []
    if child["cuda_available"] or child["device_"] != "cpu":
        problems.append("the child saw a GPU or did not map the model to the CPU")
    if agree < 0.98 or gap > 0.05:
        problems.append("predictions differ beyond tolerance (agreement >= 0.98, |dp| <= 0.05)")
    return judge(problems, ran, figure, {"agreement": agree, "max_proba_gap": gap})


def onnx_check(run):
    """ONNX export of the GPU-trained model against the CPU's predict_proba."""
    try:
        import onnx  # noqa: F401 - to_onnx needs it
        import onnxruntime
    except ImportError as exc:
        raise Skip(f"{exc.name} is not installed (the project's onnx extra)") from None
    from sklearn_npll.export import to_onnx

    m = run.shared("reloaded", lambda: trained_and_reloaded(run))
    path = run.workdir / "model.onnx"
    to_onnx(m["clf"], path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, proba = session.run(None, {"x": model_input(m["X_test"])})
    gap = float(np.abs(proba - m["child_proba"]).max())
    agree = float(np.mean(proba.argmax(1) == m["child_proba"].argmax(1)))
    gap_device = float(np.abs(proba - m["proba"]).max())
    ran = (f"to_onnx of the Co-Reg model trained on {m['clf'].device_}, onnxruntime "
           f"{onnxruntime.__version__} on the CPU, {len(proba)} test images")
    figure = (f"vs CPU predict_proba: max |dp| {gap:.2g}, agreement {agree:.3f}; vs "
              f"{m['clf'].device_} predict_proba: max |dp| {gap_device:.2g}")
    problems = [] if gap <= 1e-4 and agree == 1.0 else ["ONNX differs from predict_proba "
                                                        "(tolerance |dp| <= 1e-4)"]
    return judge(problems, ran, figure, {"max_proba_gap": gap, "agreement": agree})


# ------------------------------------------------------------ data-parallel
def one_process_fit(run, device):
    """The reference of the data-parallel checks: the same fit in this process."""
    import torch

    fit, threads = ddp_fit(), torch.get_num_threads()
    out = run.workdir / f"ddp_one_{device}"
    try:
        fit.main(str(out), sync_bn=False, device=device)
    finally:
        torch.set_num_threads(threads)
    return torch.load(f"{out}.rank0.pt", weights_only=False)


def ddp_check(backend, ranks, sync_bn=False):
    """torchrun with ``backend`` on the run's device: the ranks-agree checks of
    the CPU test (``tests/_ddp_fit.py``) against one process."""

    def check(run):
        import torch

        if backend == "nccl":
            run.needs_cuda("NCCL reduces on GPUs")
        elif run.smoke and "ddp-gloo" not in run.only:
            raise Skip("torchrun on the CPU starts two Python processes (a minute on a busy "
                       "2-core machine); tests/test_distributed_training.py runs the same fit "
                       "and checks, and '--smoke --only ddp-gloo' runs this one")
        n = run.size["gloo_ranks"] if ranks is None else ranks(run)
        if sync_bn and n < 2:
            raise Skip("one GPU: SyncBatchNorm has nothing to synchronise in a single-rank "
                       "group (needs 2 GPUs)")
        fit = ddp_fit()
        out = run.workdir / f"ddp_{backend}_{n}{'_syncbn' if sync_bn else ''}"
        args = ["--device", run.device, "--backend", backend] + (["--sync-bn"] if sync_bn else [])
        start = time.perf_counter()
        done = fit.torchrun(out, nproc=n, args=args, env=run.child_env(OMP_NUM_THREADS="1"),
                            timeout=max(60, run.remaining()))
        seconds = time.perf_counter() - start
        if done.returncode:
            tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(f"torchrun failed: {tail[0]}")
        saved = [torch.load(f"{out}.rank{r}.pt", weights_only=False) for r in range(n)]
        one = run.shared(("ddp_one", run.device), lambda: one_process_fit(run, run.device))
        ran = (f"tests/_ddp_fit.py under torchrun: {n} {backend} rank(s) on {run.device}"
               + (", SyncBatchNorm" if sync_bn else "") + f", {seconds:.0f} s")
        try:
            f = fit.check_ranks_agree(saved, one, out)
        except AssertionError as exc:
            raise Failed(last_line(exc), ran, "") from None
        figure = (f"{'ranks bit-identical, ' if n > 1 else 'single-rank group, '}weights vs "
                  f"one process {f['relative_distance']:.2g} (< 0.01), warm-up losses within "
                  f"{f['warmup_loss_gap']:.1%}, predictions agree "
                  f"{f['prediction_agreement']:.3f}")
        return ran, figure, f

    return check


def gpu_count(run):
    """One NCCL process per GPU, at most 2 (the bounds of the ranks-agree
    checks were measured with 2 ranks sharing batches of 16)."""
    import torch

    return min(2, torch.cuda.device_count())


# --------------------------------------------------------------- throughput
def throughput_train_check(run):
    """Images per second of a supervised epoch and of a Co-Reg co-training epoch."""
    import torch

    s = run.size
    X, y = patch_images(s["tp_n"], s["tp_size"])
    common = dict(batch_size=s["tp_batch"], precision=s["tp_precision"])
    if run.cuda:
        torch.cuda.reset_peak_memory_stats()
    sup = estimator(run, "cc", epochs=s["tp_sup_epochs"], augment="none", **common).fit(X, y)
    sup_peak = peak_gib(run)
    sup_rate = len(X) / float(np.median(sup.history[1:, "dur"]))
    if run.cuda:
        torch.cuda.reset_peak_memory_stats()
    co = estimator(run, "coreg", epochs=s["tp_coreg_epochs"], warmup_epochs=2,
                   start_contrastive=0, **common).fit(X, partial(y))
    co_peak = peak_gib(run)
    # epoch 1: the second warm-up epoch (two networks, strong views of 2B);
    # from epoch 3 (0-based) on: co-training with the contrastive term
    warm_rate = 2 * len(X) / float(co.history[1, "dur"])
    rows = co.history[3:]
    co_rate = float(np.median([r["train_batch_count"] * s["tp_batch"] / r["dur"] for r in rows]))
    ratio = sup_rate / co_rate
    ran = (f"{s['tp_n']} images {s['tp_size']} px, batch {s['tp_batch']}, "
           f"{type(sup.module_.encoder).__name__}, {s['tp_precision']} on {run.device}: CC on "
           f"true labels without augmentation ({len(sup.history)} epochs), Co-Reg "
           f"({len(co.history)} epochs, {len(rows)} with the contrastive term)")
    peaks = ("" if sup_peak is None else
             f"; peak GPU memory {sup_peak:.2f} / {co_peak:.2f} GiB")
    figure = (f"supervised {sup_rate:,.0f} img/s; Co-Reg warm-up {warm_rate:,.0f} img/s, "
              f"co-training {co_rate:,.0f} labeled img/s (trusted "
              f"{rows[-1]['n_trusted_a']}/{rows[-1]['n_trusted_b']} of {len(X)}); ratio "
              f"{ratio:.1f}x (arithmetic {COST_ARITHMETIC}x, target <= {COST_TARGET:g}x)" + peaks)
    data = {"supervised_img_per_s": sup_rate, "coreg_warmup_img_per_s": warm_rate,
            "coreg_cotraining_labeled_img_per_s": co_rate, "ratio": ratio,
            "supervised_peak_gib": sup_peak, "coreg_peak_gib": co_peak}
    run.memo["throughput"] = ("ok", data)
    problems = [] if all(v > 0 and math.isfinite(v) for v in (sup_rate, warm_rate, co_rate)) \
        else ["no throughput measured"]
    if run.cuda and ratio > COST_TARGET:
        problems.append(f"ratio {ratio:.1f}x above the target of {COST_TARGET:g}x")
    elif not run.cuda:
        figure += " (ratio not judged at this size)"
    return judge(problems, ran, figure, data)


def cell_hours(rates, config, n_train, method):
    """Expected hours of one cell of run.py's gpu suite at the measured rates:
    a baseline trains E epochs of N images; Co-Reg W warm-up epochs of 2N
    images (two networks) and E - W co-training epochs of at most 2N labeled
    images (the trusted splits of both networks; every sample trusted)."""
    E, W = config["epochs"], config["warmup"]
    if method.startswith("coreg"):
        seconds = (W * 2 * n_train / rates["coreg_warmup_img_per_s"]
                   + (E - W) * 2 * n_train / rates["coreg_cotraining_labeled_img_per_s"])
    else:
        seconds = E * n_train / rates["supervised_img_per_s"]
    return seconds / 3600


# full training sets of the gpu suite's data sets (the panel protocol carves
# its annotators' pool out of them)
TRAIN_SIZES = {"cifar10": 50_000, "fashion-mnist": 60_000}


def suite_time_check(run):
    """Hours per cell of ``run.py --suite gpu`` from the measured throughput."""
    import run as run_py

    status, rates = run.memo.get("throughput", ("error", None))
    if status != "ok":
        raise Skip("no throughput figures (see throughput-train)")
    per_cell, total, cells = {}, 0.0, 0
    for exp in run_py.SUITES["gpu"]:
        config = run_py.CONFIGS["gpu"][exp["dataset"]]
        for cell in run_py.experiment_cells(exp):
            if cell["method"] == "majority-vote":   # the annotator panel: no GPU training
                continue
            n = TRAIN_SIZES[cell["dataset"]] - (config["pool_size"]
                                                if cell["protocol"] == "panel" else 0)
            hours = cell_hours(rates, config, n, cell["method"])
            kind = "Co-Reg" if cell["method"].startswith("coreg") else "baseline"
            key = f"{cell['dataset']} {kind}"
            per_cell[key] = max(per_cell.get(key, 0.0), hours)
            total, cells = total + hours, cells + 1
    ran = (f"run.py's gpu suite ({cells} training cells), epochs from its CONFIGS['gpu'], "
           f"this run's {'CUDA' if run.cuda else 'CPU smoke-size'} throughput")
    figure = ("per cell at most: " + ", ".join(f"{k} {v:.3g} h" for k, v in per_cell.items())
              + f"; the suite at most {total / 24:.3g} GPU-days")
    return ran, figure, {"hours_per_cell": per_cell, "suite_hours": total}


# --------------------------------------------------------------- the run
def environment_check(run):
    """Versions, the GPU, and the packages that must be carried as wheels."""
    import importlib

    import torch

    versions = {}
    for name in ("sklearn", "torchvision", "skorch", "open_clip", "onnx", "onnxruntime",
                 "timm"):
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            versions[name] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gpu = (f"{p.name} x{torch.cuda.device_count()} ({p.total_memory / 2**30:.0f} GiB, "
               f"sm_{p.major}{p.minor}, bf16 {torch.cuda.is_bf16_supported()}), CUDA "
               f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    else:
        gpu = "no CUDA device"
    ran = f"python {platform.python_version()}, torch {torch.__version__}, {gpu}"
    figure = ", ".join(f"{k} {v or 'MISSING'}" for k, v in versions.items())
    missing = [k for k in ("skorch", "open_clip") if versions[k] is None]
    problems = [f"missing {', '.join(missing)}: carry the wheels (benchmarks/README.md)"] \
        if missing else []
    if not problems:
        import sklearn_npll

        figure += f", sklearn_npll {sklearn_npll.__version__}"
    return judge(problems, ran, figure, {"versions": versions, "gpu": gpu})


# (name, check, seconds it may take on one GPU: an allowance for the time
# budget, not a measurement)
CHECKS = [
    ("environment", environment_check, 10),
    *[(f"fit-{method}-{precision}", fit_check(method, precision),
       60 if method == "coreg" else 25)
      for method in ("coreg", "proden", "cc") for precision in ("fp32", "bf16", "fp16")],
    ("device-store", device_store_check, 30),
    ("store-decision", store_decision_check, 60),
    ("channels-last", channels_last_check, 20),
    ("annotator-precision", annotator_precision_check, 20),
    ("pickle-cpu-child", pickle_check, 60),
    ("onnx-export", onnx_check, 20),
    ("throughput-train", throughput_train_check, 90),
    ("suite-time", suite_time_check, 5),
    ("throughput-annotator", throughput_annotator_check, 60),
    ("ddp-gloo", ddp_check("gloo", None), 90),
    ("ddp-nccl", ddp_check("nccl", gpu_count), 60),
    ("ddp-syncbn", ddp_check("nccl", gpu_count, sync_bn=True), 60),
]


def table(rows):
    """The rows as a Markdown table."""
    lines = ["| check | status | figure | what ran | s |", "|---|---|---|---|---|"]
    for r in rows:
        status = r["status"] + (f": {r['reason']}" if r["reason"] else "")
        seconds = f"{r['seconds']:.1f}" if r["status"] != "skipped" else "-"
        cells = [r["name"], status, r["figure"] or "-", r["ran"] or "-", seconds]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def run_all(run, names, budget):
    """Run the checks in order within the time budget; return their rows."""
    start = time.perf_counter()
    run.remaining = lambda: budget - (time.perf_counter() - start)
    rows = []
    for name, check, allowance in CHECKS:
        if names and name not in names:
            continue
        spent = time.perf_counter() - start
        reason = None
        if not run.smoke and not run.cuda and name != "environment":
            reason = ("no CUDA device (torch.cuda.is_available() is False); --smoke runs the "
                      "CPU version")
        elif spent + allowance > budget:
            reason = (f"time budget: {spent:.0f} s spent, this check may take {allowance} s "
                      f"of the {budget:.0f} s")
        if reason:
            row = {"name": name, "status": "skipped", "figure": "", "ran": "", "seconds": 0,
                   "data": {}, "reason": reason}
        else:
            row = run_check(run, name, check)
        rows.append(row)
        print(f"[{time.perf_counter() - start:6.1f} s] {name}: {row['status']}"
              f"{' (' + row['reason'] + ')' if row['reason'] else ''} {row['figure']}",
              flush=True)
    return rows, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="the same checks on the CPU at a tiny size (CUDA ones skipped)")
    parser.add_argument("--json", help="where to write the rows (default: "
                        "benchmarks/_runs/gpu_check.json; with --smoke a temporary file)")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS,
                        help="seconds; checks that could overrun it are skipped")
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="run these checks only")
    parser.add_argument("--child-predict", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_predict:
        return child_predict(*args.child_predict)
    unknown = set(args.only or ()) - {name for name, _, _ in CHECKS}
    if unknown:
        parser.error(f"unknown checks {sorted(unknown)}; known: "
                     f"{', '.join(name for name, _, _ in CHECKS)}")
    with tempfile.TemporaryDirectory(prefix="npll-gpu-check-") as workdir:
        run = Run(args.smoke, workdir)
        run.only = set(args.only or ())
        rows, seconds = run_all(run, args.only, args.budget)
        default = Path(workdir) / "gpu_check.json" if args.smoke else \
            HERE / "_runs" / "gpu_check.json"
        path = Path(args.json) if args.json else default
        path.parent.mkdir(parents=True, exist_ok=True)
        counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "fail", "skipped")}
        path.write_text(json.dumps({
            "command": "python benchmarks/gpu_check.py " + " ".join(argv or sys.argv[1:]),
            "machine": f"{platform.node()}, {platform.platform()}, {os.cpu_count()} CPUs",
            "smoke": args.smoke, "budget_s": args.budget, "seconds": round(seconds, 1),
            "counts": counts, "rows": rows}, indent=1, default=str))
        print("\n" + table(rows))
        where = path if args.json or not args.smoke else "a temporary file"
        print(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} "
              f"skipped in {seconds:.1f} s; JSON: {where}")
    return 1 if counts["fail"] or not (run.cuda or run.smoke) else 0


if __name__ == "__main__":
    sys.exit(main())

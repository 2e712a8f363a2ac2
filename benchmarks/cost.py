"""Training cost of Co-Reg against a plain supervised epoch on the same backbone.

The reference (plain) epoch is skorch's ``NeuralNetClassifier`` training a
``ClassifierNetwork`` (the same encoder and linear head that Co-Reg's networks
carry) with cross-entropy on true labels: normalised float tensors, no
augmentation, the same data, batch size, optimiser and device.

Co-Reg's epochs are measured in three phases of one fit:

- ``warm-up``: partial cross-entropy, both networks, strong augmentation;
- ``co-reg, contrastive off``: division + co-training, before the
  contrastive and prototype terms switch on (no key encoder, no queue);
- ``co-reg, contrastive on``: the full method.

Each number is the median of several epochs. Every measurement runs in a fresh
subprocess, so the peak resident memory (``ru_maxrss``; the CUDA peak on a
GPU) belongs to that measurement alone. A third subprocess repeats the Co-Reg
fit with timers around each part of an epoch (division pass, mixture fit, weak
no-grad passes, the mixed forward, backward, optimiser steps, the contrastive
branch, prototypes, augmentation) to explain the ratio; timers are exclusive
(a nested timer's time is not counted in its parent) and synchronise CUDA.

Results go to ``benchmarks/results/cost/<dataset>_<device>.json`` and all
measured results are summarised in ``benchmarks/COST.md``.

``--features`` measures the feature-vector path instead (precomputed
embeddings and the default MLP head): whole fits of ``CoRegClassifier`` and
``PRODENClassifier`` at equal epochs on ``--n-train`` Gaussian-class vectors
of ``--dim`` dimensions, default parameters unless ``--warmup`` /
``--start-contrastive`` are given, alternating PRODEN and Co-Reg fits in
fresh processes ``--repeats`` times; the ratio of each pair and their
median, per-epoch medians per phase, peak memory, test accuracy and a hash
of the test predictions (to compare two versions of the code at the same
seed). Results: ``benchmarks/results/cost/features/*.json`` and a section of
``COST.md``.

Example::

    python benchmarks/cost.py --dataset digits
    python benchmarks/cost.py --features --n-train 10000 --dim 1280 --epochs 60
    python benchmarks/cost.py --smoke
    python benchmarks/cost.py --dataset fashion-mnist --n-train 5000
    python benchmarks/cost.py --dataset cifar10 --data-dir DATA --device cuda
"""

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# --smoke: every measurement (and the profile) on a few small epochs
SMOKE_ARGS = ["--n-train", "300", "--width", "8", "--batch-size", "128", "--warmup", "1", "--start-contrastive", "0",
              "--measure-epochs", "1", "--baseline-epochs", "2"]

PHASES = ["warm-up", "co-reg, contrastive off", "co-reg, contrastive on"]


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _setup(args):
    import torch

    torch.set_num_threads(args.threads)
    from data import load_dataset
    from run import pad_images

    X, y, _, _, _, meta = load_dataset(args.dataset, data_dir=args.data_dir,
                                       n_train=args.n_train, n_test=1000)
    if args.pad_to:
        X = pad_images(X, args.pad_to)
    return X, y, meta


def _encoder(args, X):
    from sklearn_npll._nn.backbones import default_encoder

    shape = (X.shape[3] if X.ndim == 4 else 1, X.shape[1], X.shape[2])
    cls, kwargs = default_encoder(shape)
    if args.width:
        kwargs = {**kwargs, "width": args.width}
    return cls, kwargs, shape


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _peak(device, rss_before):
    import torch

    out = {"peak_rss_mb": _rss_mb(), "rss_after_setup_mb": rss_before}
    if str(device).startswith("cuda"):
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ------------------------------------------------------------- baseline
def measure_baseline(args):
    import torch
    from skorch import NeuralNetClassifier

    from sklearn_npll._nn.augment import channel_stats
    from sklearn_npll._nn.networks import ClassifierNetwork

    X, y, meta = _setup(args)
    cls, kwargs, shape = _encoder(args, X)
    Xt = torch.as_tensor(X)
    Xt = Xt.unsqueeze(1) if Xt.ndim == 3 else Xt.permute(0, 3, 1, 2)
    mean, std = channel_stats(Xt)
    Xf = ((Xt.float() / 255.0 - torch.as_tensor(mean, dtype=torch.float32)[:, None, None])
          / torch.as_tensor(std, dtype=torch.float32)[:, None, None]).numpy()
    rss = _rss_mb()
    torch.manual_seed(0)
    net = NeuralNetClassifier(
        ClassifierNetwork(cls(**kwargs), len(np.unique(y)), shape),
        criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD, lr=args.lr,
        optimizer__momentum=0.9, optimizer__weight_decay=5e-4, batch_size=args.batch_size,
        max_epochs=args.baseline_epochs, train_split=None, iterator_train__shuffle=True,
        device=args.device, verbose=0)
    if str(args.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    net.fit(Xf, y.astype(np.int64))
    durs = [float(d) for d in net.history[:, "dur"]]
    return {"epoch_seconds": durs, "median_seconds": float(np.median(durs[1:])),
            "encoder": f"{cls.__name__}({kwargs})", "n_train": int(len(y)),
            "train_accuracy": float(net.score(Xf, y)), **_peak(args.device, rss)}


# --------------------------------------------------------------- Co-Reg
class _Timers:
    """Exclusive wall-clock timers with a stack (a nested timer pauses its parent)."""

    def __init__(self, device):
        self.device = device
        self.totals = defaultdict(float)
        self.stack = []

    def now(self):
        _sync(self.device)
        return time.perf_counter()

    def enter(self, name):
        t = self.now()
        if self.stack:
            parent, start = self.stack[-1]
            self.totals[parent] += t - start
        self.stack.append([name, t])

    def exit(self):
        t = self.now()
        name, start = self.stack.pop()
        self.totals[name] += t - start
        if self.stack:
            self.stack[-1][1] = t

    def wrap(self, name, fn):
        def timed(*a, **k):
            self.enter(name if not callable(name) else name())
            try:
                return fn(*a, **k)
            finally:
                self.exit()
        return timed

    def take(self):
        out, self.totals = dict(self.totals), defaultdict(float)
        return out


def _coreg_class(timers):
    import torch

    import sklearn_npll._estimator.context as context_mod
    import sklearn_npll._methods.label_math as dis
    import sklearn_npll._methods.coreg as coreg_mod
    from sklearn_npll import CoRegClassifier

    if timers is None:
        return CoRegClassifier
    state = {"in_divide": False, "query_next": False, "warmup": True, "contrast_on": False}

    def forward_phase(grad):
        if state["in_divide"]:
            return "division: forward (weak, no grad)"
        if state["warmup"]:
            return "warm-up: forward"
        if not grad:
            return "pseudo-labels: weak no-grad forwards (own + partner)"
        if state["query_next"]:
            state["query_next"] = False
            return "contrastive: query forward"
        return "mixed batch: forward"

    # module-level functions that the Co-Reg trainer looks up at call time
    for name, phase in [("supcon_loss_from_labels", "contrastive: loss"),
                        ("update_prototypes", "prototypes"),
                        ("prototype_probs", "prototypes"),
                        ("prototype_loss", "prototypes"),
                        ("mixup", "mixup")]:
        setattr(dis, name, timers.wrap(phase, getattr(dis, name)))
    coreg_mod.trust_probabilities = timers.wrap("division: mixture fit",
                                                coreg_mod.trust_probabilities)
    context_mod.FitContext.batch = timers.wrap("data: batch fetch", context_mod.FitContext.batch)
    orig_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        timers.enter("warm-up: backward" if state["warmup"]
                     else "backward (mixed + contrastive graph)")
        try:
            return orig_backward(self, *a, **k)
        finally:
            timers.exit()

    torch.Tensor.backward = backward

    class ProfiledCoReg(CoRegClassifier):
        def initialize_module(self):
            super().initialize_module()
            for net in (self.module_, self.module2_):
                fwd = net.forward

                def timed_forward(x, return_features=False, _fwd=fwd):
                    timers.enter(forward_phase(torch.is_grad_enabled()))
                    try:
                        return _fwd(x, return_features=return_features)
                    finally:
                        timers.exit()

                net.forward = timed_forward
                key = net.key_features

                def key_features(x, _key=key):
                    out = timers.wrap("contrastive: key encoder forward", _key)(x)
                    state["query_next"] = state["contrast_on"]
                    return out

                net.key_features = key_features
                net.momentum_update = timers.wrap("contrastive: momentum update",
                                                  net.momentum_update)
                net.enqueue = timers.wrap("contrastive: enqueue", net.enqueue)
            return self

        def initialize_optimizer(self):
            super().initialize_optimizer()
            # a bound method: torch's LR schedulers patch optimizer.step.__func__
            step = timers.wrap("optimizer step", type(self.optimizer_).step)
            self.optimizer_.step = types.MethodType(step, self.optimizer_)
            return self

        def _augmenters(self):
            augs = super()._augmenters()
            return {k: (timers.wrap(f"augmentation: {k}", v) if k != "test" else v)
                    for k, v in augs.items()}

        def run_epoch(self, epoch, ctx):
            state["warmup"] = epoch < self.warmup_epochs
            # queries are computed only once the contrastive term is on
            state["contrast_on"] = epoch > self.warmup_epochs + self.start_contrastive
            state["query_next"] = False
            return super().run_epoch(epoch, ctx)

    class ProfiledTrainer(coreg_mod.CoRegTrainer):
        def divide(self, epoch, k, net):
            state["in_divide"] = True
            timers.enter("division: other (alignment, losses)")
            try:
                return super().divide(epoch, k, net)
            finally:
                timers.exit()
                state["in_divide"] = False

    ProfiledCoReg.trainer_class = ProfiledTrainer
    return ProfiledCoReg


def measure_coreg(args, profile=False):
    import torch
    from skorch.callbacks import Callback

    from sklearn_npll import candidate_stats, make_partial_labels

    X, y, meta = _setup(args)
    cls, kwargs, shape = _encoder(args, X)
    Y = make_partial_labels(y, args.q, args.eta, n_classes=len(np.unique(y)), random_state=0)
    timers = _Timers(args.device) if profile else None
    Est = _coreg_class(timers)
    per_epoch = []

    class Snapshot(Callback):
        def on_epoch_end(self, net, **kw):
            if timers is not None:
                per_epoch.append(timers.take())

    W, S, M = args.warmup, args.start_contrastive, args.measure_epochs
    epochs = W + S + 1 + M
    clf = Est(max_epochs=epochs, warmup_epochs=W, start_contrastive=S,
              batch_size=args.batch_size, lr=args.lr, device=args.device, random_state=0,
              flip=meta["flip"], callbacks=[("snapshot", Snapshot())],
              **({"module__width": args.width} if args.width else {}))
    rss = _rss_mb()
    if str(args.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    clf.fit(X, Y)
    hist = clf.history
    durs = [float(d) for d in hist[:, "dur"]]
    phase_of = []
    for e in range(epochs):
        if e < W:
            phase_of.append("warm-up")
        elif e < W + S:
            phase_of.append("co-reg, contrastive off")
        elif e == W + S:
            phase_of.append("co-reg, key branch only")  # keys + queue, loss still off
        else:
            phase_of.append("co-reg, contrastive on")
    out = {"epoch_seconds": durs, "phase_of_epoch": phase_of, "epochs": epochs,
           "warmup": W, "start_contrastive": S, "n_train": int(len(y)),
           "candidates": {k: v for k, v in candidate_stats(Y, y).items()
                          if k in ("mean_size", "noise_rate")},
           "n_trusted": [[row.get("n_trusted_a"), row.get("n_trusted_b")] for row in hist],
           "train_batch_count": [row.get("train_batch_count") for row in hist],
           **_peak(args.device, rss)}
    out["median_seconds"] = {
        ph: float(np.median([d for d, p in zip(durs, phase_of) if p == ph]))
        for ph in PHASES + ["co-reg, key branch only"]
        if any(p == ph for p in phase_of)}
    if profile:
        out["profile_per_epoch"] = per_epoch
    return out


# ------------------------------------------------------- feature vectors
def feature_data(n, dim, n_classes=10, seed=0):
    """Gaussian-class vectors (a stand-in for embeddings): a training set of
    ``n`` and a test set of ``n // 4``, with partial labels (q=0.1, eta=0.3)."""
    from sklearn_npll import make_partial_labels

    rng = np.random.RandomState(seed)
    centers = rng.normal(0.0, 1.0, (n_classes, dim))
    y = rng.randint(0, n_classes, n + n // 4)
    # class separation chosen so that a 60-epoch fit is far from perfect
    X = (0.1 * centers[y] + rng.normal(0.0, 1.0, (len(y), dim))).astype(np.float32)
    Y = make_partial_labels(y[:n], 0.1, 0.3, n_classes=n_classes, random_state=seed)
    return X[:n], Y, X[n:], y[n:]


def measure_features(args):
    import hashlib

    import torch

    torch.set_num_threads(args.threads)
    from sklearn_npll import CoRegClassifier, PRODENClassifier

    from skorch.callbacks import Callback

    class EpochCPU(Callback):
        """Processor seconds of each epoch (``cpu``): unlike wall seconds,
        barely affected by other work on a shared machine."""

        def on_epoch_begin(self, net, **kw):
            self.start = time.process_time()

        def on_epoch_end(self, net, **kw):
            net.history.record("cpu", time.process_time() - self.start)

    X, Y, X_test, y_test = feature_data(args.n_train, args.dim)
    kwargs = dict(max_epochs=args.epochs, random_state=0, device=args.device,
                  callbacks=[("epoch_cpu", EpochCPU())])
    if args.child == "features-coreg":
        extra = {}
        if args.warmup is not None:
            extra["warmup_epochs"] = args.warmup
        if args.start_contrastive is not None:
            extra["start_contrastive"] = args.start_contrastive
        clf = CoRegClassifier(**kwargs, **extra)
    else:
        clf = PRODENClassifier(**kwargs)
    rss = _rss_mb()
    t, cpu = time.perf_counter(), time.process_time()
    clf.fit(X, Y)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    pred = clf.predict(X_test)
    out = {"fit_seconds": seconds, "fit_cpu_seconds": cpu,
           "epoch_seconds": [float(d) for d in clf.history[:, "dur"]],
           "epoch_cpu_seconds": [float(d) for d in clf.history[:, "cpu"]],
           "test_accuracy": float(np.mean(pred == y_test)),
           "prediction_sha1": hashlib.sha1(np.asarray(pred).tobytes()).hexdigest(),
           **_peak(args.device, rss)}
    if args.child == "features-coreg":
        W = clf.warmup_epochs
        S = W + clf.start_contrastive
        out["phase_of_epoch"] = ["warm-up" if e < W else "co-reg, contrastive off" if e < S
                                 else "co-reg, key branch only" if e == S
                                 else "co-reg, contrastive on" for e in range(args.epochs)]
        out["n_trusted"] = [[row.get("n_trusted_a"), row.get("n_trusted_b")]
                            for row in clf.history]
    return out


def run_features(args, argv, in_process=False):
    import platform

    import torch

    pairs = []
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}: PRODEN ...", flush=True)
        proden = _run_child("features-proden", argv, in_process)
        print(f"  {proden['fit_seconds']:.1f} s; Co-Reg ...", flush=True)
        coreg = _run_child("features-coreg", argv, in_process)
        ratio = coreg["fit_cpu_seconds"] / proden["fit_cpu_seconds"]
        print(f"  {coreg['fit_seconds']:.1f} s: {ratio:.1f}x in processor time, "
              f"{coreg['fit_seconds'] / proden['fit_seconds']:.1f}x in wall time", flush=True)
        pairs.append({"proden": proden, "coreg": coreg, "ratio": ratio,
                      "wall_ratio": coreg["fit_seconds"] / proden["fit_seconds"]})
    phases = pairs[0]["coreg"]["phase_of_epoch"]
    proden_epoch = float(np.median([d for p in pairs
                                    for d in p["proden"]["epoch_cpu_seconds"]]))
    per_phase = {}
    for ph in dict.fromkeys(phases):
        secs = [d for p in pairs for d, q in zip(p["coreg"]["epoch_cpu_seconds"], phases)
                if q == ph]
        per_phase[ph] = {"epochs": phases.count(ph), "median_seconds": float(np.median(secs)),
                         "ratio_to_proden_epoch": float(np.median(secs)) / proden_epoch}
    result = {
        "args": {k: v for k, v in vars(args).items()
                 if k not in ("child", "child_out", "command")},
        "command": getattr(args, "command", None)
        or "python benchmarks/cost.py " + " ".join(shlex.quote(a) for a in argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
                   f"(shared), torch {torch.__version__}, {args.threads} torch thread(s), "
                   f"load average at end {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        "pairs": pairs, "median_ratio": float(np.median([p["ratio"] for p in pairs])),
        "proden_epoch_seconds": proden_epoch, "per_phase": per_phase,
    }
    print(f"median ratio Co-Reg / PRODEN fit (processor time): {result['median_ratio']:.1f}x",
          flush=True)
    for ph, v in per_phase.items():
        print(f"  {ph}: {v['median_seconds']:.2f} processor s/epoch = "
              f"{v['ratio_to_proden_epoch']:.1f}x a PRODEN epoch", flush=True)
    out = Path(args.out) / "features"
    out.mkdir(parents=True, exist_ok=True)
    w = "default" if args.warmup is None else args.warmup
    (out / f"n{args.n_train}_d{args.dim}_e{args.epochs}_w{w}.json").write_text(
        json.dumps(result, indent=1))
    write_cost_md(args.out, args.md)
    print(f"wrote {out} and {args.md}", flush=True)
    return 0


def features_md(results_dir):
    files = sorted((Path(results_dir) / "features").glob("*.json"))
    if not files:
        return []
    lines = ["## Feature vectors (precomputed embeddings, default MLP head) on cpu", "",
             "Whole fits at equal epochs: `CoRegClassifier` against `PRODENClassifier`, "
             "in processor seconds of the fitting process (wall seconds shown too; on a "
             "shared machine they depend on the other work), "
             "default parameters (batch 256, MLP(256, 256), queue 8192) unless the warm-up "
             "is set, Gaussian-class vectors with partial labels (q=0.1, eta=0.3); PRODEN "
             "and Co-Reg fits alternate in fresh processes, the ratio is taken per pair and "
             "the median reported. Per-phase rows: median seconds of a Co-Reg epoch of that "
             "phase over the median PRODEN epoch.", ""]
    for f in files:
        r = json.loads(f.read_text())
        a = r["args"]
        lines += [f"### n={a['n_train']}, d={a['dim']}, {a['epochs']} epochs, warm-up "
                  f"{a['warmup'] if a['warmup'] is not None else 'default (50)'}", "",
                  f"Command: `{r['command']}`", "", f"Machine: {r['machine']}", "",
                  "| pair | PRODEN fit, processor s (wall s) | Co-Reg fit, processor s "
                  "(wall s) | ratio (wall) | Co-Reg test acc | "
                  "PRODEN test acc | peak RSS Co-Reg / PRODEN (MB) |",
                  "|---|---|---|---|---|---|---|"]
        for i, p in enumerate(r["pairs"], 1):
            lines.append(f"| {i} | {p['proden']['fit_cpu_seconds']:.1f} "
                         f"({p['proden']['fit_seconds']:.0f}) | "
                         f"{p['coreg']['fit_cpu_seconds']:.1f} ({p['coreg']['fit_seconds']:.0f}) "
                         f"| {p['ratio']:.1f}x ({p['wall_ratio']:.1f}x) | "
                         f"{p['coreg']['test_accuracy']:.4f} | "
                         f"{p['proden']['test_accuracy']:.4f} | "
                         f"{p['coreg']['peak_rss_mb']:.0f} / {p['proden']['peak_rss_mb']:.0f} |")
        lines += ["", f"Median ratio: **{r['median_ratio']:.1f}x**. Co-Reg test predictions "
                  f"sha1 `{r['pairs'][0]['coreg']['prediction_sha1'][:12]}`.", "",
                  "| Co-Reg epoch phase | epochs | median processor s / epoch | "
                  "x a PRODEN epoch "
                  f"({r['proden_epoch_seconds']:.2f} s) |", "|---|---|---|---|"]
        for ph, v in r["per_phase"].items():
            lines.append(f"| {ph} | {v['epochs']} | {v['median_seconds']:.2f} | "
                         f"{v['ratio_to_proden_epoch']:.1f}x |")
        lines.append("")
    return lines


# ----------------------------------------------------------------- driver
def _child(args):
    fn = {"baseline": measure_baseline, "coreg": measure_coreg,
          "profile": lambda a: measure_coreg(a, profile=True),
          "features-proden": measure_features, "features-coreg": measure_features}[args.child]
    result = fn(args)
    Path(args.child_out).write_text(json.dumps(result))


def _run_child(mode, argv, in_process=False):
    """One measurement in a fresh subprocess (its own peak memory), or, for
    --smoke, in this process (the same code without the start-up cost)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        child_argv = [*argv, "--child", mode, "--child-out", str(out)]
        t = time.perf_counter()
        if in_process:
            main(child_argv)
        else:
            subprocess.run([sys.executable, str(Path(__file__).resolve()), *child_argv],
                           check=True, env=env)
        res = json.loads(out.read_text())
        res["process_seconds"] = time.perf_counter() - t
        return res


def summarise_profile(coreg_prof):
    """Mean seconds per epoch of each timed part, per phase."""
    rows = {}
    phases = coreg_prof["phase_of_epoch"]
    for ph in PHASES:
        idx = [i for i, p in enumerate(phases) if p == ph]
        if not idx:
            continue
        parts = defaultdict(list)
        for i in idx:
            snap = coreg_prof["profile_per_epoch"][i]
            for k in set().union(*[coreg_prof["profile_per_epoch"][j] for j in idx]):
                parts[k].append(snap.get(k, 0.0))
        totals = [coreg_prof["epoch_seconds"][i] for i in idx]
        rows[ph] = {"epoch_seconds": float(np.mean(totals)),
                    "parts": {k: float(np.mean(v)) for k, v in parts.items()}}
        rows[ph]["parts"]["other (python, losses, bookkeeping)"] = \
            rows[ph]["epoch_seconds"] - sum(rows[ph]["parts"].values())
    return rows


def write_cost_md(results_dir, md_path):
    files = sorted(Path(results_dir).glob("*.json"))
    lines = ["# Training cost of Co-Reg", "",
             "Seconds per training epoch of `CoRegClassifier` divided by one epoch of a plain "
             "skorch `NeuralNetClassifier` (same encoder + linear head, cross-entropy on "
             "normalised tensors, no augmentation), same data, batch size and device, "
             "measured in one run of `benchmarks/cost.py` (each measurement in a fresh "
             "process; medians over epochs). A Co-Reg epoch trains **two** networks; its "
             "post-warm-up epochs pass over the trusted split P only (|P|/B + 1 labeled "
             "batches per network, each with an unlabeled batch and four augmented views "
             "of both). Target of the issue: ratio <= 12x with the contrastive term on "
             "(the paper's code: about 15x).", "",
             "What the algorithm itself costs: per labeled batch of B, a co-training step "
             "runs no-grad forwards on 8B rows (two weak views of the labeled batch and "
             "of the unlabeled batch through the trained network, both unlabeled views "
             "through the partner, two key-encoder views) and forward + backward on 6B "
             "rows (the mixed batch of 4B, the 2B contrastive queries), against forward "
             "+ backward on B rows for a plain batch. With a forward at about a third of "
             "a forward + backward, that is about 8/3 + 6 = 8.7 plain batches per step "
             "with the contrastive term on (6/3 + 4 = 6 with it off: no keys, no queries), "
             "plus the division pass (a no-grad forward of the training set per network "
             "and epoch). A per-batch ratio near these numbers means the implementation "
             "adds little beyond the method's own arithmetic; the profile below shows "
             "where the rest goes.", ""]
    for f in files:
        r = json.loads(f.read_text())
        a = r["args"]
        if "baseline" not in r:
            continue
        base = r.get("plain_epoch_seconds", r["baseline"]["median_seconds"])
        n_base = int(np.ceil(r["baseline"]["n_train"] / a["batch_size"]))
        lines += [f"## {a['dataset']} on {a['device']} (n_train={r['coreg']['n_train']}, "
                  f"batch {a['batch_size']}, {r['baseline']['encoder']})", "",
                  f"Command: `{r['command']}`", "",
                  f"Machine: {r['machine']}", "",
                  "| epoch kind | seconds / epoch (median) | ratio to plain epoch | "
                  "batches / epoch (median) | ratio per batch | "
                  "trusted |P| (A/B, last epoch of the phase) |",
                  "|---|---|---|---|---|---|",
                  f"| plain NeuralNetClassifier epoch | {base:.3f} | 1.0x | {n_base} | 1.0x "
                  "| - |"]
        if "baseline_after" in r:
            lines[-1] = lines[-1].replace(
                f"{base:.3f}", f"{base:.3f} (before Co-Reg {r['baseline']['median_seconds']:.3f}, "
                f"after {r['baseline_after']['median_seconds']:.3f})", 1)
        c = r["coreg"]
        for ph, sec in c["median_seconds"].items():
            idx = [i for i, p in enumerate(c["phase_of_epoch"]) if p == ph]
            nt = c["n_trusted"][idx[-1]] if idx else None
            bad = not nt or nt[0] is None or nt[0] != nt[0]  # missing or NaN
            nt = "-" if bad else f"{nt[0]}/{nt[1]} of {c['n_train']}"
            nb = float(np.median([c["train_batch_count"][i] for i in idx]))
            per_batch = "-" if ph == "warm-up" else f"{(sec / nb) / (base / n_base):.1f}x"
            lines.append(f"| Co-Reg {ph} | {sec:.3f} | {sec / base:.1f}x | {nb:g} | "
                         f"{per_batch} | {nt} |")
        lines += ["", "Batches: plain epochs count ceil(n/B) batches; Co-Reg's warm-up "
                  "counts the batches of 2B of both networks (no per-batch ratio); after warm-up, the labeled "
                  "batches of B of both networks (each with an unlabeled batch of B; the "
                  "division pass is not counted as batches but its time is in the epoch). "
                  "The per-epoch ratio depends on the size of the trusted splits, the "
                  "per-batch ratio does not."]
        lines += ["", "Peak memory (fresh process each; resident set size includes the "
                  "Python + torch runtime, shown after setup as well):", "",
                  "| run | RSS after setup (MB) | peak RSS (MB) | CUDA peak allocated (MB) |",
                  "|---|---|---|---|"]
        for name in ("baseline", "coreg"):
            m = r[name]
            cuda = m.get("cuda_peak_allocated_mb")
            lines.append(f"| {name} | {m['rss_after_setup_mb']:.0f} | {m['peak_rss_mb']:.0f} "
                         f"| {'-' if cuda is None else f'{cuda:.0f}'} |")
        prof = r.get("profile_summary") or {}
        if prof:
            lines += ["", "Profile (timed run; mean seconds per epoch of each part, "
                      "exclusive timers; the timers add a little overhead):", ""]
            phases = [p for p in PHASES if p in prof]
            keys = sorted(set().union(*[prof[p]["parts"] for p in phases]),
                          key=lambda k: -max(prof[p]["parts"].get(k, 0) for p in phases))
            lines.append("| part | " + " | ".join(phases) + " |")
            lines.append("|---|" + "---|" * len(phases))
            lines.append("| **epoch total** | " + " | ".join(
                f"**{prof[p]['epoch_seconds']:.3f}**" for p in phases) + " |")
            for k in keys:
                cells = []
                for p in phases:
                    v = prof[p]["parts"].get(k, 0.0)
                    tot = prof[p]["epoch_seconds"]
                    cells.append(f"{v:.3f} ({100 * v / tot:.0f}%)" if v else "-")
                lines.append(f"| {k} | " + " | ".join(cells) + " |")
        if r.get("notes"):
            lines += ["", r["notes"]]
        lines.append("")
    lines += features_md(results_dir)
    Path(md_path).write_text("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits",
                   choices=["digits", "fashion-mnist", "mnist", "cifar10"])
    p.add_argument("--n-train", type=int, dest="n_train")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--pad-to", type=int, dest="pad_to")
    p.add_argument("--width", type=int, help="SmallCNN width (default: the library's)")
    p.add_argument("--batch-size", type=int, default=256, dest="batch_size")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--q", type=float, default=0.1)
    p.add_argument("--eta", type=float, default=0.3)
    p.add_argument("--warmup", type=int, help="default 3 (images), Co-Reg's own (features)")
    p.add_argument("--start-contrastive", type=int, dest="start_contrastive",
                   help="default 3 (images), Co-Reg's own (features)")
    p.add_argument("--features", action="store_true",
                   help="feature-vector path: whole Co-Reg and PRODEN fits (see above)")
    p.add_argument("--dim", type=int, default=1280, help="--features: vector size")
    p.add_argument("--epochs", type=int, default=60, help="--features: epochs of each fit")
    p.add_argument("--repeats", type=int, default=3, help="--features: PRODEN/Co-Reg pairs")
    p.add_argument("--measure-epochs", type=int, default=4, dest="measure_epochs",
                   help="epochs with the contrastive term on")
    p.add_argument("--baseline-epochs", type=int, default=6, dest="baseline_epochs")
    p.add_argument("--no-profile", action="store_true", help="skip the timed run")
    p.add_argument("--out", default=str(HERE / "results" / "cost"))
    p.add_argument("--md", default=str(HERE / "COST.md"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long check that the script runs: a few small epochs "
                        "(images, then --features on 600 vectors of 64 dims), results "
                        "written to a temporary folder")
    args = p.parse_args(argv)
    if args.child:
        return _child(args)

    argv = sys.argv[1:] if argv is None else list(argv)
    smoke = args.smoke
    if smoke:
        tmp = Path(tempfile.mkdtemp(prefix="npll-smoke-"))
        out = ["--out", str(tmp), "--md", str(tmp / "COST.md")]
        features_argv = ["--features", "--n-train", "600", "--dim", "64", "--epochs", "4",
                         "--repeats", "1", "--warmup", "1", "--start-contrastive", "1", *out]
        run_features(p.parse_args(features_argv), features_argv, in_process=True)
        argv = SMOKE_ARGS + out
        args = p.parse_args(argv)
    elif args.features:
        if args.n_train is None:
            args.n_train = 10000
        args.command = "python benchmarks/cost.py " + " ".join(shlex.quote(a) for a in argv)
        argv += ["--features", "--n-train", str(args.n_train), "--dim", str(args.dim),
                 "--epochs", str(args.epochs)]
        for flag, value in (("--warmup", args.warmup),
                            ("--start-contrastive", args.start_contrastive)):
            if value is not None:
                argv += [flag, str(value)]
        return run_features(args, argv)
    if args.warmup is None:
        args.warmup = 3
    if args.start_contrastive is None:
        args.start_contrastive = 3
    print("baseline (plain NeuralNetClassifier epochs) ...", flush=True)
    baseline = _run_child("baseline", argv, smoke)
    print(f"  median {baseline['median_seconds']:.3f} s/epoch", flush=True)
    print("Co-Reg ...", flush=True)
    coreg = _run_child("coreg", argv, smoke)
    for ph, sec in coreg["median_seconds"].items():
        print(f"  {ph}: {sec:.3f} s/epoch = {sec / baseline['median_seconds']:.1f}x",
              flush=True)
    print("baseline again (brackets Co-Reg against load drift on a shared machine) ...",
          flush=True)
    baseline_after = _run_child("baseline", argv, smoke)
    print(f"  median {baseline_after['median_seconds']:.3f} s/epoch", flush=True)
    plain = (baseline["median_seconds"] + baseline_after["median_seconds"]) / 2
    for ph, sec in coreg["median_seconds"].items():
        print(f"  {ph}: {sec / plain:.1f}x the mean of both plain measurements", flush=True)
    profile = None
    if not args.no_profile:
        print("Co-Reg with timers ...", flush=True)
        profile = _run_child("profile", argv, smoke)
    import platform

    import torch

    result = {
        "args": vars(args) | {"child": None, "child_out": None},
        "command": "python benchmarks/cost.py " + " ".join(shlex.quote(a) for a in argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
                   f"(shared), torch {torch.__version__}, {args.threads} torch thread(s), "
                   f"load average at end {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        "baseline": baseline, "baseline_after": baseline_after, "coreg": coreg,
        "plain_epoch_seconds": plain,
        "ratios": {ph: sec / plain for ph, sec in coreg["median_seconds"].items()},
    }
    if profile is not None:
        result["profile"] = profile
        result["profile_summary"] = summarise_profile(profile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.dataset}_{args.device.replace(':', '')}.json").write_text(
        json.dumps(result, indent=1))
    write_cost_md(out, args.md)
    print(f"wrote {out} and {args.md}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

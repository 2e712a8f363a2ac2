"""One data-parallel Co-Reg fit, run under ``torchrun`` by the CPU test (gloo)
and by ``benchmarks/gpu_check.py`` (NCCL, or gloo on CUDA tensors), or in one
process for the reference:
``python _ddp_fit.py OUT [--sync-bn] [--device cuda] [--backend nccl]``.
Each rank saves its final state (every parameter and buffer of both
networks and the shared state) and its history to ``OUT.rank<r>.pt``;
:func:`check_ranks_agree` holds the checks that the ranks agree with each
other and track the one-process run."""

import os
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist
from skorch.callbacks import Callback, Checkpoint

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sklearn_npll import CoRegClassifier, make_partial_labels  # noqa: E402
from sklearn_npll._nn.backbones import SmallCNN  # noqa: E402

HISTORY_KEYS = ["loss_pce", "loss_x", "loss_u", "loss_prototype", "loss_contrastive",
                "n_trusted_a", "n_trusted_b", "train_loss"]


class BatchSizes(Callback):
    """The sizes of the training batches this process computed."""

    def initialize(self):
        self.sizes = set()
        return self

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if training:
            self.sizes.add(len(batch[0]))


FIRST_SEED = []


def identity(image):
    """The identity; records the seed of the first augmentation it serves
    (the augmenter seeds torch's generator for each batch)."""
    if not FIRST_SEED:
        FIRST_SEED.append(torch.initial_seed())
    return image


def make_data():
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(3), 32)
    X = rng.randint(0, 80, size=(96, 3, 16, 16)).astype(np.uint8)
    for c in range(3):  # a bright patch per class
        X[y == c, c, 4 * c:4 * c + 6, 4:10] += 150
    Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.1, random_state=0)
    return X, Y


def make_estimator(sync_bn=False, checkpoint_dir=None, device="cpu"):
    encoder = SmallCNN(in_channels=3, width=8)
    if sync_bn:
        encoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
    # Deterministic augmentations (identity) and MixUp weights close to 1:
    # what remains different between one process with batch B and two with
    # B/2 is which samples MixUp pairs and the in-batch contrastive set.
    # precision="fp32" ("auto" is fp32 on the CPU, bf16 or fp16 on CUDA, whose
    # rounding would blur the bounds of check_ranks_agree).
    return CoRegClassifier(encoder, max_epochs=4, warmup_epochs=2, start_contrastive=0,
                           batch_size=16, queue_size=64, proj_dim=8, mixup_alpha=0.01,
                           weak_augment=identity, strong_augment=identity,
                           random_state=0, device=device, precision="fp32", verbose=1,
                           callbacks=[("batch_sizes", BatchSizes())] + (
                               [] if checkpoint_dir is None else
                               [("checkpoint", Checkpoint(dirname=checkpoint_dir,
                                                          monitor=None))]))


def state(clf):
    out = {}
    for name in ("module_", "module2_", "coreg_state_"):
        for key, value in getattr(clf, name).state_dict().items():
            out[f"{name}.{key}"] = value.detach().cpu().clone()
    return out


def result(clf, X):
    history = {k: np.array([row.get(k, np.nan) for row in clf.history], dtype=float)
               for k in HISTORY_KEYS}
    return {"state": state(clf), "history": history, "proba": clf.predict_proba(X),
            "batch_sizes": sorted(dict(clf.callbacks_)["batch_sizes"].sizes),
            "callbacks": [name for name, _ in clf.callbacks_],
            "first_augmentation_seed": FIRST_SEED[0]}


def relative_distance(a, b):
    """||a - b|| / ||b|| over the parameters (weights and biases) of a state."""
    num = den = 0.0
    for key, ref in b.items():
        if ref.dtype.is_floating_point and key.rsplit(".", 1)[-1] in ("weight", "bias"):
            num += float(((a[key] - ref) ** 2).sum())
            den += float((ref ** 2).sum())
    return (num / den) ** 0.5


def check_ranks_agree(ranks, one, out):
    """Assert that the ranks of a torchrun fit agree with each other and
    track the one-process fit; return the figures.

    ``ranks``: what each rank saved (``OUT.rank<r>.pt``, in rank order);
    ``one``: what the one-process fit saved; ``out``: the torchrun run's
    ``OUT`` (its per-rank checkpoint folders are looked at).
    """
    size = len(ranks)
    # Every process ends with identical networks and state: every parameter
    # and buffer (batch-norm statistics, key encoder, queue, memory,
    # prototypes, division loss history), bit for bit.
    for other in ranks[1:]:
        assert ranks[0]["state"].keys() == other["state"].keys()
        for key, value in ranks[0]["state"].items():
            assert torch.equal(value, other["state"][key]), key
        for key in HISTORY_KEYS:
            np.testing.assert_array_equal(ranks[0]["history"][key], other["history"][key])

    # Augmentations come from a random stream of each rank's own; rank 0
    # keeps the one of a single process.
    seeds = [run["first_augmentation_seed"] for run in ranks]
    assert len(set(seeds)) == size and seeds[0] == one["first_augmentation_seed"]

    # Each rank computed its share of every batch (the largest: warm-up
    # batches of 2 x 16 samples).
    assert max(one["batch_sizes"]) == 32
    for rank in ranks:
        assert max(rank["batch_sizes"]) == -(-32 // size)

    # Rank 0 alone prints and writes checkpoints.
    assert "print_log" in ranks[0]["callbacks"]
    assert all("print_log" not in rank["callbacks"] for rank in ranks[1:])
    assert any(os.scandir(f"{out}.checkpoint0"))
    for r in range(1, size):
        written = f"{out}.checkpoint{r}"
        assert not os.path.exists(written) or not any(os.scandir(written))

    # The data-parallel run tracks the one-process run. What differs: each
    # rank's batch norm normalises with the statistics of its share of the
    # batch, and MixUp pairs and in-batch contrastive pairs stay within a
    # rank. Measured on the CPU with 2 ranks: 0.004 relative distance of the
    # weights after 4 epochs, warm-up losses within 1%, every prediction the
    # same. Doubling or halving the batch in one process with the same seed
    # moves the weights by 0.011 and 0.026, so the bound of 0.01 tells a
    # faithful data-parallel run from one that trains like another batch
    # size (or sums instead of averaging).
    distance = relative_distance(ranks[0]["state"], one["state"])
    assert distance < 0.01, f"relative weight distance {distance:.4f} >= 0.01"
    np.testing.assert_allclose(ranks[0]["history"]["loss_pce"][:2],
                               one["history"]["loss_pce"][:2], rtol=0.02)
    agree = float((ranks[0]["proba"].argmax(1) == one["proba"].argmax(1)).mean())
    assert agree >= 0.95, f"predictions agree on {agree:.3f} < 0.95"
    loss_gap = float(np.max(np.abs(ranks[0]["history"]["loss_pce"][:2]
                                   / one["history"]["loss_pce"][:2] - 1)))
    return {"ranks": size, "relative_distance": distance, "prediction_agreement": agree,
            "warmup_loss_gap": loss_gap}


def torchrun(out, nproc=2, args=(), env=None, timeout=600):
    """Run this file under ``torchrun --standalone`` with ``nproc`` processes
    (extra command-line ``args``); return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", os.path.abspath(__file__), str(out), *args],
        env=env, capture_output=True, text=True, timeout=timeout)


def _device(device, distributed):
    """``cuda`` -> this process's GPU (``LOCAL_RANK``, wrapping around when
    several processes share one GPU)."""
    if device != "cuda":
        return device
    index = int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count() if distributed else 0
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def main(out, sync_bn, device="cpu", backend="gloo"):
    torch.set_num_threads(1)
    distributed = "RANK" in os.environ
    device = _device(device, distributed)
    if distributed:
        dist.init_process_group(backend)
    rank = dist.get_rank() if distributed else 0
    X, Y = make_data()
    FIRST_SEED.clear()
    # a checkpoint directory per rank, to see which ranks write
    clf = make_estimator(sync_bn, checkpoint_dir=f"{out}.checkpoint{rank}",
                         device=device).fit(X, Y)
    torch.save(result(clf, X), f"{out}.rank{rank}.pt")
    if distributed:
        dist.destroy_process_group()


def _option(args, name, default):
    return args[args.index(name) + 1] if name in args else default


if __name__ == "__main__":
    options = sys.argv[2:]
    main(sys.argv[1], "--sync-bn" in options, device=_option(options, "--device", "cpu"),
         backend=_option(options, "--backend", "gloo"))

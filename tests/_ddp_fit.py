"""One data-parallel Co-Reg fit, run by the tests under ``torchrun`` (gloo,
CPU), or in one process for the reference: ``python _ddp_fit.py OUT [--sync-bn]``.
Each rank saves its final state (every parameter and buffer of both
networks and the shared state) and its history to ``OUT.rank<r>.pt``."""

import os
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


def make_estimator(sync_bn=False, checkpoint_dir=None):
    encoder = SmallCNN(in_channels=3, width=8)
    if sync_bn:
        encoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
    # Deterministic augmentations (identity) and MixUp weights close to 1:
    # what remains different between one process with batch B and two with
    # B/2 is which samples MixUp pairs and the in-batch contrastive set.
    return CoRegClassifier(encoder, max_epochs=4, warmup_epochs=2, start_contrastive=0,
                           batch_size=16, queue_size=64, proj_dim=8, mixup_alpha=0.01,
                           weak_augment=identity, strong_augment=identity,
                           random_state=0, device="cpu", verbose=1,
                           callbacks=[("batch_sizes", BatchSizes())] + (
                               [] if checkpoint_dir is None else
                               [("checkpoint", Checkpoint(dirname=checkpoint_dir,
                                                          monitor=None))]))


def state(clf):
    out = {}
    for name in ("module_", "module2_", "coreg_state_"):
        for key, value in getattr(clf, name).state_dict().items():
            out[f"{name}.{key}"] = value.detach().clone()
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


def main(out, sync_bn):
    torch.set_num_threads(1)
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    X, Y = make_data()
    FIRST_SEED.clear()
    # a checkpoint directory per rank, to see which ranks write
    clf = make_estimator(sync_bn, checkpoint_dir=f"{out}.checkpoint{rank}").fit(X, Y)
    torch.save(result(clf, X), f"{out}.rank{rank}.pt")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], "--sync-bn" in sys.argv[2:])

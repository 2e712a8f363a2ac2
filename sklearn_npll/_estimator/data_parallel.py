"""Data-parallel training of one estimator on several processes (GPUs,
nodes) with ``torch.distributed``, launched by ``torchrun``.

Every rank runs the same fit with the same seed, so every random draw that
decides *which* samples form a batch, the MixUp weights and the mixtures is
the same on every rank (numpy generator); each rank computes its contiguous
part of every batch, with augmentations from its own torch stream. The hooks below keep the ranks' states equal with collectives:

- gradients (and batch-norm running statistics) are averaged before every
  optimiser step, so every rank applies the same update;
- what Co-Reg keeps per sample or per batch is gathered from all ranks:
  predictions for the memory and the division (every rank fits the same
  mixture on the same losses, hence the same trusted split), the features
  that update the prototypes, the keys pushed into the contrastive queue;
- logged loss terms are averaged, so a NaN anywhere stops every rank and
  every rank's history holds the same values;
- only rank 0 prints and writes checkpoints.

Each hook is a no-op unless the estimator supports data parallelism and a
process group of more than one process is initialised.
"""

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["world", "local_rows", "local_batches", "gather", "average",
           "average_gradients", "split_generator", "prepare_fit", "after_initialize"]


def world(estimator=None):
    """``(world_size, rank)`` of the data-parallel group; ``(1, 0)`` when not
    distributed or when ``estimator`` does not train data-parallel."""
    if estimator is not None and not getattr(estimator, "_data_parallel", False):
        return 1, 0
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(), dist.get_rank()


def _comm_device(tensor):
    # NCCL reduces on the GPU; gloo (CPU) on host memory
    return tensor.device if dist.get_backend() == "nccl" else torch.device("cpu")


def local_rows(estimator, rows):
    """This rank's contiguous part of ``rows`` (all of them when alone)."""
    size, rank = world(estimator)
    if size == 1:
        return rows
    return np.array_split(np.asarray(rows), size)[rank]


def local_batches(estimator, chunks):
    """Each global batch reduced to this rank's part."""
    size, _ = world(estimator)
    if size == 1:
        return chunks
    return [local_rows(estimator, chunk) for chunk in chunks]


def _gather_one(tensor, size):
    device = _comm_device(tensor)
    is_bool = tensor.dtype == torch.bool
    x = (tensor.to(torch.uint8) if is_bool else tensor).to(device).contiguous()
    n = torch.tensor([x.shape[0]], device=device)
    counts = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(counts, n)
    counts = [int(c) for c in counts]
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    out = torch.cat([part[:c] for part, c in zip(parts, counts)]).to(tensor.device)
    return out.bool() if is_bool else out


def gather(estimator, *tensors):
    """Concatenate every rank's tensors along the first axis, in rank order
    (the order of the global batch); the tensors themselves when alone."""
    size, _ = world(estimator)
    if size == 1:
        return tensors if len(tensors) > 1 else tensors[0]
    out = tuple(_gather_one(t, size) for t in tensors)
    return out if len(out) > 1 else out[0]


def average(estimator, values):
    """Mean over ranks of a dict of scalars (floats or 0-d tensors), as
    floats (this rank's values when alone)."""
    values = {k: float(v.detach()) if torch.is_tensor(v) else float(v)
              for k, v in values.items()}
    size, _ = world(estimator)
    if size == 1:
        return values
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    flat = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(flat)
    return dict(zip(values, (flat / size).tolist()))


def _batch_norm_buffers(network):
    return [buf for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for buf in (m.running_mean, m.running_var) if buf is not None]


def average_gradients(estimator, network, loss, n_samples):
    """Average ``network``'s gradients, its batch-norm running statistics and
    the loss over ranks with one all-reduce; return the mean loss and the
    number of samples of the global batch (``n_samples`` on this rank).

    Averaging the running means of the ranks' parts of a batch gives the
    running mean of the whole batch (for equal parts); the running variances
    miss the spread between the ranks' means (SyncBatchNorm layers have none
    to miss).
    """
    size, _ = world(estimator)
    if size == 1:
        return loss, n_samples
    grads = [p.grad for p in network.parameters() if p.grad is not None]
    tensors = grads + _batch_norm_buffers(network)
    device = _comm_device(loss)
    flat = torch.cat([t.detach().reshape(-1).float().to(device) for t in tensors]
                     + [loss.detach().reshape(1).float().to(device),
                        torch.tensor([float(n_samples)], device=device)])
    dist.all_reduce(flat)
    total = int(round(float(flat[-1])))
    flat /= size
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return flat[-2].to(loss.device), total


def split_generator(estimator, generator):
    """Give each rank other than 0 its own stream of the torch generator
    (augmentations, MixUp pairs), derived from the shared state and the rank,
    so that ranks do not draw the same augmentation for the samples at the
    same place of their parts. Rank 0 keeps the stream of a single process.
    The numpy generator, which decides batches and mixtures, stays shared."""
    size, rank = world(estimator)
    if size == 1 or rank == 0:
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    generator.manual_seed((seed + rank) % 2**63)


def prepare_fit(estimator):
    """Before the networks are built: every rank takes rank 0's seed, so that
    an unseeded fit (``random_state=None``) still draws the same batches,
    initial weights and mixtures on every rank."""
    size, _ = world(estimator)
    if size == 1:
        return
    seed = [getattr(estimator, "_seed_", None)]
    dist.broadcast_object_list(seed, src=0)
    estimator._seed_ = seed[0]


def after_initialize(estimator):
    """After callbacks and networks exist: ranks other than 0 keep their
    checkpoint callbacks (which may load) but never save, and print nothing."""
    from skorch.callbacks import Checkpoint, PrintLog, ProgressBar

    size, rank = world(estimator)
    if size == 1 or rank == 0:
        return
    kept = []
    for name, cb in estimator.callbacks_:
        if isinstance(cb, (PrintLog, ProgressBar)):
            continue
        if isinstance(cb, Checkpoint):
            cb.save_model = _no_save
        kept.append((name, cb))
    estimator.callbacks_ = kept


def _no_save(net):
    """Checkpoints are written by rank 0 only."""

"""Networks trained by the estimators: a classifier head on an encoder, and
Co-Reg's two-head network with its momentum copy, key queue and prediction
memory."""

import contextlib
import copy

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ClassifierNetwork", "CoRegNetwork", "CoRegState", "encoder_out_features",
           "per_chunk_batch_norm", "reset_parameters"]


def reset_parameters(module):
    """Re-draw every parameter of ``module`` that knows how to."""
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return module


@contextlib.contextmanager
def per_chunk_batch_norm(module, sizes):
    """Run several forward passes as one, exactly.

    Inside the context every batch-norm layer of ``module`` splits its input
    into consecutive chunks of ``sizes`` rows and normalises each chunk on
    its own, in order: batch statistics and running-statistics updates are
    those of separate forward passes over the chunks. Convolutions, linear
    layers and activations, which treat samples independently, run once on
    the whole batch. (An encoder with other batch-coupled layers would need
    its own care.)

    Parameters
    ----------
    module : nn.Module
    sizes : list of int
        Rows of each chunk, summing to the batch size.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    >>> a, b = torch.randn(5, 3), torch.randn(7, 3)
    >>> with per_chunk_batch_norm(net, [5, 7]):
    ...     out = net(torch.cat([a, b]))
    >>> out.shape
    torch.Size([12, 4])
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        def forward(x, _forward=layer.forward):
            return torch.cat([_forward(chunk) for chunk in x.split(sizes)])
        layer.forward = forward
    try:
        yield module
    finally:
        for layer in layers:
            del layer.forward


def encoder_out_features(encoder, sample_shape):
    """Width of the feature vector an encoder returns.

    Uses ``encoder.out_features`` when the encoder declares it, otherwise runs
    one dry forward pass on a zero input of ``sample_shape``.
    """
    width = getattr(encoder, "out_features", None)
    if isinstance(width, int):
        return width
    was_training = encoder.training
    encoder.eval()
    try:
        device = next(encoder.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    with torch.no_grad():
        out = encoder(torch.zeros((2, *sample_shape), device=device))
    encoder.train(was_training)
    if out.ndim != 2:
        raise ValueError(
            f"The encoder must return a (batch, features) tensor; it returned shape "
            f"{tuple(out.shape)}. Flatten or pool its output, or set its "
            f"`out_features` attribute."
        )
    return int(out.shape[1])


class ClassifierNetwork(nn.Module):
    """An encoder followed by a linear classifier head.

    Parameters
    ----------
    encoder : nn.Module
        Maps a batch of inputs to ``(batch, out_features)`` features.
    n_classes : int
        Number of classes.
    sample_shape : tuple
        Shape of one input sample, used to size the head when the encoder does
        not declare ``out_features``.
    """

    def __init__(self, encoder, n_classes, sample_shape):
        super().__init__()
        self.encoder = encoder
        self.out_features = encoder_out_features(encoder, sample_shape)
        self.classifier = nn.Linear(self.out_features, n_classes)

    def forward(self, x):
        return self.classifier(self.encoder(x))

    def for_prediction(self):
        """The part of this network that predicts: itself."""
        return self


class CoRegNetwork(ClassifierNetwork):
    """One of Co-Reg's two networks.

    Encoder with a classifier head and a projection head
    ``Linear(d, d) - ReLU - Linear(d, proj_dim)`` whose output is
    L2-normalised; a momentum ("key") copy of encoder and projection head; a
    FIFO queue of key vectors with their soft pseudo-labels and P/U flags; and
    a memory of the latest softmax prediction of every training sample.

    The queue starts empty: only filled entries are returned by
    :meth:`queue`, so no random initial value ever enters the loss.

    Parameters
    ----------
    encoder : nn.Module
        Backbone.
    n_classes : int
        Number of classes.
    sample_shape : tuple
        Shape of one input sample.
    n_samples : int
        Number of training samples (rows of the prediction memory).
    proj_dim : int, default=128
        Width of the projection head's output.
    queue_size : int, default=8192
        Capacity of the key queue.
    """

    def __init__(self, encoder, n_classes, sample_shape, n_samples, proj_dim=128,
                 queue_size=8192):
        super().__init__(encoder, n_classes, sample_shape)
        d = self.out_features
        self.projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))
        self.key_encoder = copy.deepcopy(self.encoder)
        self.key_projector = copy.deepcopy(self.projector)
        for p in self.key_parameters():
            p.requires_grad_(False)
        self.register_buffer("queue_z", torch.zeros(queue_size, proj_dim))
        self.register_buffer("queue_targets", torch.zeros(queue_size, n_classes))
        self.register_buffer("queue_flags", torch.zeros(queue_size, dtype=torch.bool))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("memory", torch.full((n_samples, n_classes), 1.0 / n_classes))

    def key_parameters(self):
        return [*self.key_encoder.parameters(), *self.key_projector.parameters()]

    def for_prediction(self):
        """A :class:`ClassifierNetwork` sharing this network's encoder and
        classifier head: the prediction path, without the projection head,
        momentum copy, queue and prediction memory that only training uses."""
        net = nn.Module.__new__(ClassifierNetwork)
        nn.Module.__init__(net)
        net.encoder, net.classifier = self.encoder, self.classifier
        net.out_features = self.out_features
        return net.train(self.training)

    def live_parameters(self):
        return [*self.encoder.parameters(), *self.projector.parameters()]

    def forward(self, x, return_features=False):
        h = self.encoder(x)
        logits = self.classifier(h)
        if not return_features:
            return logits
        return logits, F.normalize(self.projector(h), dim=1)

    def key_features(self, x):
        """L2-normalised projections from the momentum copy (no gradient)."""
        with torch.no_grad():
            return F.normalize(self.key_projector(self.key_encoder(x)), dim=1)

    @torch.no_grad()
    def momentum_update(self, m):
        """``key <- m * key + (1 - m) * live`` for every parameter."""
        torch._foreach_mul_(self.key_parameters(), m)
        torch._foreach_add_(self.key_parameters(), self.live_parameters(), alpha=1.0 - m)

    @torch.no_grad()
    def sync_key(self):
        """Copy the live parameters into the momentum copy.

        Only parameters are copied: the key encoder keeps its own batch-norm
        running statistics.
        """
        torch._foreach_copy_(self.key_parameters(), self.live_parameters())

    @torch.no_grad()
    def enqueue(self, z, targets, flags):
        """Push keys with their pseudo-labels and flags (FIFO)."""
        size = self.queue_z.shape[0]
        n = z.shape[0]
        if n >= size:
            z, targets, flags = z[-size:], targets[-size:], flags[-size:]
            n = size
        idx = (self.queue_ptr + torch.arange(n, device=z.device)) % size
        self.queue_z[idx] = z.to(self.queue_z.dtype)
        self.queue_targets[idx] = targets.to(self.queue_targets.dtype)
        self.queue_flags[idx] = flags.bool()
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
        self.queue_count.copy_(torch.clamp(self.queue_count + n, max=size))

    def queue(self):
        """The filled entries of the queue: ``(z, targets, flags)``."""
        count = int(self.queue_count)
        return self.queue_z[:count], self.queue_targets[:count], self.queue_flags[:count]


class CoRegState(nn.Module):
    """State shared by both networks: the prototypes and the division
    loss histories, kept as buffers so that checkpoints carry them.

    Parameters
    ----------
    n_classes : int
    n_samples : int
    proj_dim : int, default=128
    history_length : int, default=5
        How many epochs of division losses are averaged.
    """

    def __init__(self, n_classes, n_samples, proj_dim=128, history_length=5):
        super().__init__()
        self.register_buffer("prototypes", torch.zeros(n_classes, proj_dim))
        self.register_buffer("loss_history", torch.zeros(2, history_length, n_samples))
        self.register_buffer("history_count", torch.zeros(2, dtype=torch.long))

    @torch.no_grad()
    def push_losses(self, k, losses):
        """Append one epoch of normalised division losses for network ``k``
        and return the average over the stored window."""
        length = self.loss_history.shape[1]
        row = int(self.history_count[k]) % length
        self.loss_history[k, row] = losses
        self.history_count[k] += 1
        filled = min(int(self.history_count[k]), length)
        return self.loss_history[k, :filled].mean(0)

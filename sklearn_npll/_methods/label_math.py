"""Pure label math of Co-Reg (noisy partial-label learning).

Every function here is stateless: it takes tensors, returns new tensors and
never modifies its inputs. Nothing here knows about networks, optimisers,
queues or estimators; the training loop owns all state and calls these
functions. Only :mod:`torch` (and :mod:`numpy`, for the MixUp draw) is
imported.

Notation used throughout (``n`` samples, ``C`` classes):

- ``probs`` : (n, C) rows on the probability simplex (softmax outputs).
- ``Y`` : (n, C) 0/1 candidate matrix; row ``i`` is the candidate set ``S_i``.
  Bool, integer and floating dtypes are accepted.
- ``w`` : (n,) trust probability of each sample (posterior of the clean
  Gaussian-mixture component).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "partial_cross_entropy",
    "negative_entropy",
    "distribution_alignment",
    "division_loss",
    "minmax_normalize",
    "restrict_to_candidates",
    "co_pseudo_labels",
    "apply_prior",
    "unlabeled_targets",
    "sharpen",
    "sample_mixup_lambda",
    "mixup",
    "mixed_cross_entropy",
    "mixed_mse",
    "rampup",
    "update_prototypes",
    "prototype_probs",
    "prototype_loss",
    "supcon_loss_from_labels",
]


def _tiny(t):
    """Smallest positive normal number of a floating tensor's dtype."""
    return torch.finfo(t.dtype).tiny


def _as_float(Y, like):
    """Cast a candidate matrix (bool/int/float) to the dtype/device of ``like``."""
    return Y.to(dtype=like.dtype, device=like.device)


# ---------------------------------------------------------------------------
# Warm-up losses
# ---------------------------------------------------------------------------


def partial_cross_entropy(probs, Y, eps=1e-5):
    """Partial cross-entropy over samples whose candidate set is informative.

    ``L = mean_i -log(sum_j Y_ij p_ij + eps)`` where the mean runs over the
    rows whose candidate set is *not* all ``C`` classes (a full set carries no
    information). If no such row exists, the result is a zero that is still
    attached to ``probs``' autograd graph, so ``backward`` works.

    Parameters
    ----------
    probs : torch.Tensor of shape (n, C)
        Predicted class probabilities.
    Y : torch.Tensor of shape (n, C)
        0/1 candidate matrix.
    eps : float, default=1e-5
        Added inside the logarithm (reference value).

    Returns
    -------
    loss : torch.Tensor
        Scalar tensor on ``probs``' device.

    Examples
    --------
    >>> import torch
    >>> p = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    >>> Y = torch.tensor([[1, 1, 0], [1, 1, 1]])
    >>> round(partial_cross_entropy(p, Y, eps=0.0).item(), 4)  # -log(0.75)
    0.2877
    """
    Yf = _as_float(Y, probs)
    informative = ~(Yf > 0).all(dim=1)
    row_loss = -torch.log((Yf * probs).sum(dim=1) + eps)
    mask = informative.to(probs.dtype)
    # Sync-free: the sum over an empty selection is 0 and stays on the graph.
    return (row_loss * mask).sum() / mask.sum().clamp_min(1.0)


def negative_entropy(probs):
    """Confidence penalty: mean negative entropy ``mean_i sum_j p_ij log p_ij``.

    Entries with ``p_ij = 0`` contribute 0 (``0 log 0 = 0``), and the gradient
    stays finite there.

    Parameters
    ----------
    probs : torch.Tensor of shape (n, C)
        Predicted class probabilities.

    Returns
    -------
    loss : torch.Tensor
        Scalar tensor, in ``[-log C, 0]`` for rows on the simplex.

    Examples
    --------
    >>> import torch
    >>> round(negative_entropy(torch.full((2, 4), 0.25)).item(), 4)  # -log 4
    -1.3863
    >>> negative_entropy(torch.tensor([[1.0, 0.0]])).item()
    0.0
    """
    return (probs * torch.log(probs.clamp_min(_tiny(probs)))).sum(dim=1).mean()


# ---------------------------------------------------------------------------
# Division
# ---------------------------------------------------------------------------


def distribution_alignment(probs, memory_mean, prior=None):
    """Distribution alignment (DA) of predictions towards a class prior.

    ``q_i = normalise(p_i / (memory_mean / prior))``: classes the network
    predicts more often than the prior says are scaled down, rarer ones up.

    Parameters
    ----------
    probs : torch.Tensor of shape (n, C)
        Predicted class probabilities.
    memory_mean : torch.Tensor of shape (C,)
        Mean over all training samples of the prediction memory.
    prior : torch.Tensor of shape (C,), default=None
        Class prior; uniform ``1 / C`` if None. Only its ratios matter.

    Returns
    -------
    q : torch.Tensor of shape (n, C)
        Aligned predictions; every row sums to one.

    Examples
    --------
    >>> import torch
    >>> p = torch.tensor([[0.6, 0.4]])
    >>> distribution_alignment(p, torch.tensor([0.75, 0.25]))
    tensor([[0.3333, 0.6667]])
    """
    C = probs.shape[1]
    memory_mean = memory_mean.to(dtype=probs.dtype, device=probs.device)
    if prior is None:
        prior = torch.full((C,), 1.0 / C, dtype=probs.dtype, device=probs.device)
    else:
        prior = prior.to(dtype=probs.dtype, device=probs.device)
    ratio = memory_mean.clamp_min(_tiny(probs)) / prior
    q = probs / ratio
    return q / q.sum(dim=1, keepdim=True).clamp_min(_tiny(probs))


def division_loss(q, Y, eps=1e-12):
    """Per-sample division loss ``l_i = -log(max_{j in S_i} q_ij)``.

    Parameters
    ----------
    q : torch.Tensor of shape (n, C)
        Aligned predictions (see :func:`distribution_alignment`).
    Y : torch.Tensor of shape (n, C)
        0/1 candidate matrix.
    eps : float, default=1e-12
        The maximum is clamped from below at ``eps`` before the logarithm, so
        an empty candidate set, an all-zero restriction or an underflow gives
        ``-log(eps)`` (27.6 for the default) instead of infinity. The
        reference code has no floor (inf, then NaN in the mixture); with the
        floor, such a sample's loss sets the top of the min-max scale.

    Returns
    -------
    loss : torch.Tensor of shape (n,)
        Non-negative for ``q`` on the simplex.

    Examples
    --------
    >>> import torch
    >>> q = torch.tensor([[0.5, 0.25, 0.25]])
    >>> round(division_loss(q, torch.tensor([[0, 1, 1]])).item(), 4)  # -log .25
    1.3863
    """
    best = (_as_float(Y, q) * q).max(dim=1).values
    return -torch.log(best.clamp_min(eps))


def minmax_normalize(x):
    """Min-max normalise a tensor to ``[0, 1]``.

    ``(x - min) / (max - min)``; a constant (or empty) input gives zeros.

    Parameters
    ----------
    x : torch.Tensor
        Floating tensor of any shape; min and max run over all entries.

    Returns
    -------
    y : torch.Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import torch
    >>> minmax_normalize(torch.tensor([1.0, 2.0, 3.0]))
    tensor([0.0000, 0.5000, 1.0000])
    >>> minmax_normalize(torch.tensor([2.0, 2.0]))
    tensor([0., 0.])
    """
    if x.numel() == 0:
        return x.clone()
    lo = x.min()
    span = (x.max() - lo).clamp_min(_tiny(x))
    # A constant input has x - lo == 0 everywhere, hence exactly 0 / tiny = 0.
    return (x - lo) / span


# ---------------------------------------------------------------------------
# Pseudo-labels
# ---------------------------------------------------------------------------


def restrict_to_candidates(Y, q):
    """Restrict predictions to the candidate set and renormalise.

    ``r_i = normalise(Y_i * q_i)``. When ``Y_i * q_i`` sums to zero, ``r_i``
    falls back to the uniform distribution over the candidates (and, if the
    candidate set itself is empty, over all classes).

    Parameters
    ----------
    Y : torch.Tensor of shape (n, C)
        0/1 candidate matrix.
    q : torch.Tensor of shape (n, C)
        Non-negative scores, typically the partner's aligned prediction.

    Returns
    -------
    r : torch.Tensor of shape (n, C)
        Rows on the simplex, zero outside non-empty candidate sets.

    Examples
    --------
    >>> import torch
    >>> restrict_to_candidates(torch.tensor([[1, 1, 0]]),
    ...                        torch.tensor([[0.2, 0.6, 0.2]]))
    tensor([[0.2500, 0.7500, 0.0000]])
    """
    Yf = _as_float(Y, q)
    r = Yf * q
    total = r.sum(dim=1, keepdim=True)
    n_cand = Yf.sum(dim=1, keepdim=True)
    uniform_all = torch.full_like(q, 1.0 / q.shape[1])
    fallback = torch.where(n_cand > 0, Yf / n_cand.clamp_min(1.0), uniform_all)
    return torch.where(total > 0, r / total.clamp_min(_tiny(q)), fallback)


def co_pseudo_labels(Y, partner_q, own_probs_mean, w):
    """Co-pseudo-labels of the trusted (partial) split.

    ``r_i = normalise(Y_i * partner_q_i)`` (see :func:`restrict_to_candidates`)
    and ``t_i = w_i r_i + (1 - w_i) own_probs_mean_i``.

    Note that ``t_i`` is *not* zero outside the candidate set when
    ``w_i < 1``: the network's own mean prediction is unrestricted, which is
    what lets Co-Reg recover a true label missing from a noisy set.

    Parameters
    ----------
    Y : torch.Tensor of shape (n, C)
        0/1 candidate matrix of the batch.
    partner_q : torch.Tensor of shape (n, C)
        The partner network's aligned predictions ``Q_b``.
    own_probs_mean : torch.Tensor of shape (n, C)
        Mean of this network's softmax over the two weak views.
    w : torch.Tensor of shape (n,)
        Trust probability of each sample, in ``[0, 1]``.

    Returns
    -------
    t : torch.Tensor of shape (n, C)
        Rows on the simplex (before sharpening).

    Examples
    --------
    >>> import torch
    >>> Y = torch.tensor([[1, 0]])
    >>> co_pseudo_labels(Y, torch.tensor([[0.5, 0.5]]),
    ...                  torch.tensor([[0.2, 0.8]]), torch.tensor([0.5]))
    tensor([[0.6000, 0.4000]])
    """
    r = restrict_to_candidates(Y, partner_q)
    own = own_probs_mean.to(dtype=r.dtype, device=r.device)
    w = w.to(dtype=r.dtype, device=r.device).reshape(-1, 1)
    return w * r + (1.0 - w) * own


def apply_prior(p, prior, beta=1.0):
    """``normalise(p * prior ** beta)``: a prior over classes applied to
    distributions, row by row.

    Parameters
    ----------
    p : torch.Tensor of shape (n, C)
        Distributions (rows on the simplex).
    prior : torch.Tensor of shape (n, C)
        Per-row prior probabilities (e.g. a teacher's), positive.
    beta : float, default=1.0
        Strength of the prior (0: none).

    Returns
    -------
    q : torch.Tensor of shape (n, C)
        Rows on the simplex.

    Examples
    --------
    >>> import torch
    >>> apply_prior(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.75, 0.25]]))
    tensor([[0.7500, 0.2500]])
    """
    weighted = p * prior.to(p).clamp_min(_tiny(p)) ** beta
    return weighted / weighted.sum(dim=1, keepdim=True).clamp_min(_tiny(p))


def unlabeled_targets(*probs):
    """Targets of the unlabeled split: the mean of the given predictions.

    Parameters
    ----------
    *probs : torch.Tensor of shape (n, C)
        One or more probability tensors (in Co-Reg: softmax of both networks
        on both weak views).

    Returns
    -------
    t : torch.Tensor of shape (n, C)

    Examples
    --------
    >>> import torch
    >>> unlabeled_targets(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    tensor([[0.5000, 0.5000]])
    """
    if not probs:
        raise ValueError("unlabeled_targets needs at least one tensor, got none.")
    return torch.stack(probs, dim=0).mean(dim=0)


def sharpen(p, T=0.5):
    """Temperature sharpening ``p_j^(1/T) / sum_k p_k^(1/T)`` along dim 1.

    Computed as ``softmax(log(p) / T)`` with ``p`` clamped at the dtype's
    smallest normal number, so it never overflows or divides by zero; zero
    entries stay (numerically) zero for ``T <= 1``.

    Parameters
    ----------
    p : torch.Tensor of shape (n, C)
        Non-negative rows (need not be normalised).
    T : float, default=0.5
        Temperature; ``T < 1`` sharpens, ``T = 1`` only normalises.

    Returns
    -------
    p_sharp : torch.Tensor of shape (n, C)

    Examples
    --------
    >>> import torch
    >>> sharpen(torch.tensor([[0.75, 0.25]]))
    tensor([[0.9000, 0.1000]])
    """
    if T <= 0:
        raise ValueError(f"The sharpening temperature T must be > 0, got {T!r}.")
    return torch.softmax(torch.log(p.clamp_min(_tiny(p))) / T, dim=1)


# ---------------------------------------------------------------------------
# MixUp and label-space consistency
# ---------------------------------------------------------------------------


def sample_mixup_lambda(alpha=4.0, random_state=None):
    """Draw the MixUp coefficient ``lam ~ Beta(alpha, alpha)``, folded to >= 0.5.

    ``lam = max(lam, 1 - lam)``, so the first (unpermuted) input always
    dominates. The draw comes from numpy's Beta sampler on ``random_state``:
    the same generator state always gives the same ``lam``.

    Parameters
    ----------
    alpha : float, default=4.0
        Beta concentration, > 0.
    random_state : numpy RandomState or Generator, int or None, default=None
        Source of randomness (in a fit: the fit's seeded numpy generator); an
        int or None seeds a new ``numpy.random.Generator``.

    Returns
    -------
    lam : float
        In ``[0.5, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> lam = sample_mixup_lambda(4.0, np.random.RandomState(0))
    >>> 0.5 <= lam <= 1.0 and lam == sample_mixup_lambda(4.0, np.random.RandomState(0))
    True
    """
    alpha = float(alpha)
    if not alpha > 0.0 or not math.isfinite(alpha):
        raise ValueError(f"The MixUp alpha must be a positive number, got {alpha!r}.")
    rng = random_state if hasattr(random_state, "beta") else np.random.default_rng(random_state)
    lam = float(rng.beta(alpha, alpha))
    return max(lam, 1.0 - lam)


def mixup(inputs, targets, lam, perm):
    """Mix a batch with a permutation of itself.

    ``mixed = lam * x + (1 - lam) * x[perm]``, the same for the targets.
    (``targets`` is target_a and ``targets[perm]`` target_b in the spec.)

    Parameters
    ----------
    inputs : torch.Tensor of shape (n, ...)
    targets : torch.Tensor of shape (n, C)
    lam : float
        Mixing coefficient.
    perm : torch.Tensor of shape (n,)
        Permutation of ``range(n)`` (long).

    Returns
    -------
    mixed_inputs : torch.Tensor of shape (n, ...)
    mixed_targets : torch.Tensor of shape (n, C)

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[0.0], [1.0]])
    >>> t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> mx, mt = mixup(x, t, 0.75, torch.tensor([1, 0]))
    >>> mx.flatten(), mt[0]
    (tensor([0.2500, 0.7500]), tensor([0.7500, 0.2500]))
    """
    perm = perm.to(device=inputs.device)
    mixed_inputs = lam * inputs + (1.0 - lam) * inputs[perm]
    perm_t = perm.to(device=targets.device)
    mixed_targets = lam * targets + (1.0 - lam) * targets[perm_t]
    return mixed_inputs, mixed_targets


def mixed_cross_entropy(logits, targets):
    """Soft-target cross-entropy ``L_x = -mean_i sum_j t_ij log softmax_ij``.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, C)
    targets : torch.Tensor of shape (n, C)
        Soft targets (rows on the simplex).

    Returns
    -------
    loss : torch.Tensor
        Scalar.

    Examples
    --------
    >>> import torch
    >>> round(mixed_cross_entropy(torch.zeros(1, 2),
    ...                           torch.tensor([[1.0, 0.0]])).item(), 4)  # log 2
    0.6931
    """
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def mixed_mse(logits, targets):
    """Unlabeled consistency ``L_u = mean over rows and classes (softmax - t)^2``.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, C)
    targets : torch.Tensor of shape (n, C)

    Returns
    -------
    loss : torch.Tensor
        Scalar.

    Examples
    --------
    >>> import torch
    >>> mixed_mse(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item()
    0.25
    """
    return ((torch.softmax(logits, dim=1) - targets) ** 2).mean()


def rampup(epoch, iteration, num_iterations, warmup_epochs, length=16):
    """Linear ramp-up weight of the unlabeled loss.

    ``clip((epoch + iteration / num_iterations - warmup_epochs) / length, 0, 1)``.

    Parameters
    ----------
    epoch : int
        Current epoch (0-based, counting warm-up epochs).
    iteration : int
        Iteration within the epoch.
    num_iterations : int
        Iterations per epoch (values < 1 are treated as 1).
    warmup_epochs : int
        Number of warm-up epochs ``W``.
    length : float, default=16
        Epochs to ramp from 0 to 1; ``length <= 0`` gives a step at ``W``.

    Returns
    -------
    weight : float
        In ``[0, 1]``.

    Examples
    --------
    >>> rampup(epoch=58, iteration=0, num_iterations=10, warmup_epochs=50)
    0.5
    """
    current = epoch + iteration / max(num_iterations, 1) - warmup_epochs
    if length <= 0:
        return 1.0 if current >= 0 else 0.0
    return float(min(max(current / length, 0.0), 1.0))


# ---------------------------------------------------------------------------
# Prototypes
# ---------------------------------------------------------------------------


def update_prototypes(prototypes, z, labels, gamma=0.999):
    """Moving-average prototype update, vectorised, then row L2-normalisation.

    Gives the same result as the sample-by-sample reference loop
    ``for z_i, c_i in batch: O[c_i] = gamma * O[c_i] + (1 - gamma) * z_i``
    followed by ``O = normalize(O, dim=1)``: with ``k_c`` samples of class
    ``c`` in the batch and ``r_i`` the 1-based rank of sample ``i`` among
    them (batch order), ``O_c <- gamma^k_c O_c + (1 - gamma) sum_i
    gamma^(k_c - r_i) z_i``. Rows that end up exactly zero (a class never
    seen, prototypes starting at zero) stay zero.

    The inputs are not modified and no gradient flows (``z`` is detached).

    Parameters
    ----------
    prototypes : torch.Tensor of shape (C, D)
    z : torch.Tensor of shape (n, D)
        Features of the labeled samples (weak view 1).
    labels : torch.Tensor of shape (n,)
        Class of each sample (argmax of its pseudo-label), long.
    gamma : float, default=0.999
        Moving-average momentum.

    Returns
    -------
    new_prototypes : torch.Tensor of shape (C, D)

    Examples
    --------
    >>> import torch
    >>> O = torch.zeros(2, 2)
    >>> update_prototypes(O, torch.tensor([[3.0, 4.0]]), torch.tensor([1]))
    tensor([[0.0000, 0.0000],
            [0.6000, 0.8000]])
    """
    O = prototypes.detach()
    z = z.detach().to(dtype=O.dtype, device=O.device)
    labels = labels.to(device=O.device, dtype=torch.long).reshape(-1)
    C = O.shape[0]
    onehot = F.one_hot(labels, num_classes=C).to(O.dtype)  # (n, C)
    counts = onehot.sum(dim=0)  # (C,)
    rank = (onehot.cumsum(dim=0) * onehot).sum(dim=1)  # 1-based rank within class
    exponent = counts[labels] - rank  # k_c - r_i >= 0
    g = torch.as_tensor(gamma, dtype=O.dtype, device=O.device)
    weights = (1.0 - g) * torch.pow(g, exponent)  # (n,)
    acc = torch.zeros_like(O).index_add_(0, labels, weights.unsqueeze(1) * z)
    new = torch.pow(g, counts).unsqueeze(1) * O + acc
    return F.normalize(new, p=2, dim=1)


def prototype_probs(z, prototypes, temperature=0.3):
    """Prototype class probabilities ``softmax(z O^T / temperature)``.

    Parameters
    ----------
    z : torch.Tensor of shape (n, D)
        (Mixed-batch) features.
    prototypes : torch.Tensor of shape (C, D)
    temperature : float, default=0.3

    Returns
    -------
    s : torch.Tensor of shape (n, C)

    Examples
    --------
    >>> import torch
    >>> prototype_probs(torch.tensor([[1.0, 0.0]]), torch.eye(2), 1.0)
    tensor([[0.7311, 0.2689]])
    """
    O = prototypes.to(dtype=z.dtype, device=z.device)
    return torch.softmax(z @ O.t() / temperature, dim=1)


def prototype_loss(proto_probs, targets_a, targets_b, lam, n_labeled, lambda_u=1.0):
    """Prototype loss of the mixed batch.

    The first ``n_labeled`` rows (in Co-Reg: both strong views of the labeled
    batch, ``2 |x|`` rows) get
    ``lam * KL(target_a || s) + (1 - lam) * KL(target_b || s)``, each KL with
    batch-mean reduction over these rows (as
    ``torch.nn.functional.kl_div(log s, target, reduction='batchmean')``).
    The remaining rows get
    ``lambda_u * [lam * mean((s - target_a)^2) + (1 - lam) * mean((s - target_b)^2)]``
    (means over rows and classes). The two parts are summed; an empty part
    contributes 0.

    Parameters
    ----------
    proto_probs : torch.Tensor of shape (n, C)
        ``s`` from :func:`prototype_probs`.
    targets_a : torch.Tensor of shape (n, C)
        Unpermuted (sharpened) targets.
    targets_b : torch.Tensor of shape (n, C)
        Permuted targets ``targets_a[perm]``.
    lam : float
        MixUp coefficient.
    n_labeled : int
        Number of leading labeled rows.
    lambda_u : float, default=1.0
        Weight of the unlabeled part.

    Returns
    -------
    loss : torch.Tensor
        Scalar, non-negative for rows on the simplex.

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    >>> t = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    >>> prototype_loss(s, t, t, 0.7, n_labeled=1).item()
    0.25
    """
    n_labeled = int(n_labeled)
    s = proto_probs
    zero = s[:0].sum()
    if n_labeled > 0:
        log_s = torch.log(s[:n_labeled].clamp_min(_tiny(s)))
        ta = targets_a[:n_labeled].to(s.dtype)
        tb = targets_b[:n_labeled].to(s.dtype)
        labeled = (lam * F.kl_div(log_s, ta, reduction="batchmean")
                   + (1.0 - lam) * F.kl_div(log_s, tb, reduction="batchmean"))
    else:
        labeled = zero
    if n_labeled < s.shape[0]:
        su = s[n_labeled:]
        ua = targets_a[n_labeled:].to(s.dtype)
        ub = targets_b[n_labeled:].to(s.dtype)
        unlabeled = lambda_u * (lam * ((su - ua) ** 2).mean()
                                + (1.0 - lam) * ((su - ub) ** 2).mean())
    else:
        unlabeled = zero
    return labeled + unlabeled


# ---------------------------------------------------------------------------
# Noisy supervised contrastive loss
# ---------------------------------------------------------------------------


class _MaskedLogSumExp(torch.autograd.Function):
    """``log sum_{a not ignored} exp(q_i . F_a / tau)`` per row, where
    ``F = [queries; others]`` and only the queries carry a gradient. The
    ``(n, 2n + m)`` matrix is allocated once and turned in place into the
    masked softmax that the backward pass needs, and the backward pass skips
    the gradient of the ``others`` rows."""

    @staticmethod
    def forward(ctx, queries, others, ignore_mask, temperature):
        contrast = torch.cat([queries, others])
        probs = torch.mm(queries, contrast.t()).div_(temperature)
        probs.masked_fill_(ignore_mask, float("-inf"))
        row_max = probs.amax(dim=1, keepdim=True)
        total = probs.sub_(row_max).exp_().sum(dim=1, keepdim=True)
        probs.div_(total)
        ctx.save_for_backward(contrast, probs)
        ctx.temperature = temperature
        return (row_max + total.log()).squeeze(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        contrast, probs = ctx.saved_tensors
        n = probs.shape[0]
        g = probs * (grad / ctx.temperature).unsqueeze(1)
        # as anchors, and as the first n entries of the contrast set
        grad_queries = g @ contrast + g[:, :n].t() @ contrast[:n]
        return grad_queries, None, None, None


def _ignore_mask(a_lab, a_flag, c_lab, c_flag, n_classes):
    """The contrastive loss's ignore mask, ``(n, 2n + m)`` bool.

    Away from the two diagonals (self, own key) an entry depends only on the
    anchor's (label, flag) and the column's (label, flag), so one row per
    kind of anchor is built and gathered.
    """
    device = a_lab.device
    n = a_lab.shape[0]
    rows = torch.arange(n, device=device)
    kind_label = torch.arange(n_classes, device=device).repeat_interleave(2)
    kind_trusted = torch.tensor([False, True], device=device).repeat(n_classes)
    same = kind_label.unsqueeze(1) == c_lab.unsqueeze(0)
    ignore = (same & ~(kind_trusted.unsqueeze(1) & c_flag.unsqueeze(0)))[a_lab * 2 + a_flag]
    ignore[rows, rows] = True
    ignore[rows, rows + n] = False
    return ignore


def supcon_loss_from_labels(queries, keys, queue_z, anchor_labels, anchor_flags,
                            queue_labels, queue_flags, temperature=0.07):
    """Noisy supervised contrastive loss (MoCo style), from labels and flags.

    The contrast set is ``F = [queries (n); keys (n); queue (m)]``; entries
    ``i`` and ``i + n`` carry anchor ``i``'s label and flag (1 = trusted
    split P, 0 = unlabeled split U). For anchor ``i``: positives are its own
    key ``i + n`` and, if ``flag_i == 1``, every other entry with flag 1 and
    the same label; ignored (out of the denominator) are itself, and, if
    ``flag_i == 1``, the entries of its label with flag 0, or, if
    ``flag_i == 0``, every entry of its label except its own key.
    ``L = -mean_i (1 / |Pos(i)|) sum_{p in Pos(i)} [q_i . F_p / tau
    - log sum_{a not ignored} exp(q_i . F_a / tau)]``.

    No positive mask is built: a trusted anchor's summed positive similarity
    is its dot product with one per-class sum of trusted vectors; only the
    denominator goes over the full ``(n, 2n + m)`` similarity matrix.

    Parameters
    ----------
    queries : torch.Tensor of shape (n, D)
        L2-normalised query features (with gradient).
    keys : torch.Tensor of shape (n, D)
        Key features of the same anchors.
    queue_z : torch.Tensor of shape (m, D)
        Filled part of the queue (``m`` may be 0).
    anchor_labels, queue_labels : torch.Tensor of shape (n,) and (m,)
        Class of each entry (argmax of its pseudo-label).
    anchor_flags, queue_flags : torch.Tensor of shape (n,) and (m,)
        1/True for entries from the trusted split.
    temperature : float, default=0.07

    Returns
    -------
    loss : torch.Tensor
        Scalar.

    Examples
    --------
    >>> import torch
    >>> q = torch.eye(2)
    >>> no_queue = torch.zeros(0, dtype=torch.long)
    >>> loss = supcon_loss_from_labels(q, q, torch.zeros(0, 2), torch.tensor([0, 1]),
    ...                                torch.tensor([1, 1]), no_queue, no_queue, 1.0)
    >>> round(loss.item(), 4)  # log(1 + 2 / e)
    0.5514
    """
    device = queries.device
    contrast = torch.cat([queries, keys.to(queries), queue_z.to(queries)])
    a_lab = anchor_labels.reshape(-1).to(device).long()
    a_flag = anchor_flags.reshape(-1).to(device).bool()
    c_lab = torch.cat([a_lab, a_lab, queue_labels.reshape(-1).to(device).long()])
    c_flag = torch.cat([a_flag, a_flag, queue_flags.reshape(-1).to(device).bool()])
    n = a_lab.shape[0]
    n_classes = int(c_lab.max()) + 1
    ignore = _ignore_mask(a_lab, a_flag, c_lab, c_flag, n_classes)
    log_denominator = _MaskedLogSumExp.apply(queries, contrast[n:].detach(), ignore,
                                             temperature)

    # Summed positive similarity: trusted anchor i -> q_i . (sum of the trusted
    # entries of its class - q_i); untrusted anchor -> q_i . k_i.
    trusted_cols = c_flag.to(queries.dtype)
    class_sums = torch.zeros(n_classes, queries.shape[1], dtype=queries.dtype, device=device)
    class_sums = class_sums.index_add(0, c_lab, contrast * trusted_cols.unsqueeze(1))
    class_counts = torch.zeros(n_classes, dtype=queries.dtype, device=device).index_add(
        0, c_lab, trusted_cols)
    positives = torch.where(a_flag.unsqueeze(1), class_sums[a_lab] - queries, contrast[n:2 * n])
    count = torch.where(a_flag, class_counts[a_lab] - 1, torch.ones_like(class_counts[a_lab]))
    pos_sum = (queries * positives).sum(dim=1) / temperature
    per_anchor = pos_sum / count - log_denominator  # every anchor has its own key
    return 0.0 - per_anchor.mean()

"""The mask-based noisy supervised contrastive loss, written as co-reg.md
words it: a reference for the library's
:func:`~sklearn_npll._methods.label_math.supcon_loss_from_labels`, which
computes the same value and gradient without building the masks."""

import torch


def contrastive_masks(anchor_labels, anchor_flags, queue_labels, queue_flags):
    """Positive and ignore masks of the noisy supervised contrastive loss.

    The contrast set is ``F = [queries (n); keys (n); queue (m)]``; entries
    ``i`` and ``i + n`` carry anchor ``i``'s label and flag (1 = trusted
    split P, 0 = unlabeled split U). For anchor ``i``:

    - positives: its own key ``i + n`` always; if ``flag_i == 1`` also every
      other entry with flag 1 and the same label;
    - ignored (left out of the denominator): itself (column ``i``; self is
      excluded through this mask); if ``flag_i == 1`` the entries of the same
      label with flag 0; if ``flag_i == 0`` every entry of the same label
      except its own key.

    Positives and ignored entries never overlap. Pass only the filled part of
    the queue (``m`` may be 0).

    Parameters
    ----------
    anchor_labels : torch.Tensor of shape (n,)
        Class of each anchor (argmax of its pseudo-label), long.
    anchor_flags : torch.Tensor of shape (n,)
        1/True for trusted anchors, 0/False otherwise.
    queue_labels : torch.Tensor of shape (m,)
    queue_flags : torch.Tensor of shape (m,)

    Returns
    -------
    pos_mask : torch.Tensor of shape (n, 2n + m), bool
    ignore_mask : torch.Tensor of shape (n, 2n + m), bool

    Examples
    --------
    >>> import torch
    >>> pos, ign = contrastive_masks(torch.tensor([0, 0]), torch.tensor([1, 0]),
    ...                              torch.tensor([0]), torch.tensor([1]))
    >>> pos.int()
    tensor([[0, 0, 1, 0, 1],
            [0, 0, 0, 1, 0]], dtype=torch.int32)
    >>> ign.int()
    tensor([[1, 1, 0, 1, 0],
            [1, 1, 1, 0, 1]], dtype=torch.int32)
    """
    device = anchor_labels.device
    a_lab = anchor_labels.reshape(-1).long()
    a_flag = anchor_flags.reshape(-1).to(device).bool()
    q_lab = queue_labels.reshape(-1).to(device).long()
    q_flag = queue_flags.reshape(-1).to(device).bool()
    n = a_lab.shape[0]
    all_lab = torch.cat([a_lab, a_lab, q_lab])
    all_flag = torch.cat([a_flag, a_flag, q_flag])
    width = all_lab.shape[0]

    same = a_lab.unsqueeze(1) == all_lab.unsqueeze(0)  # (n, width)
    cols = torch.arange(width, device=device).unsqueeze(0)
    rows = torch.arange(n, device=device).unsqueeze(1)
    self_mask = cols == rows
    own_key = cols == rows + n
    af = a_flag.unsqueeze(1)
    cf = all_flag.unsqueeze(0)

    pos_mask = own_key | (af & cf & same & ~self_mask)
    ignore_mask = self_mask | (af & same & ~cf) | (~af & same & ~own_key)
    return pos_mask, ignore_mask


def noisy_supcon_loss(queries, contrast, pos_mask, ignore_mask, temperature=0.07):
    """Noisy supervised contrastive loss (MoCo style).

    ``L = -mean_i (1 / |Pos(i)|) sum_{p in Pos(i)} [ q_i . F_p / tau
    - log sum_{a not ignored} exp(q_i . F_a / tau) ]``, where the ignore mask
    from :func:`contrastive_masks` already excludes the anchor itself. The
    log-sum-exp subtracts the row maximum, so it is stable for any
    temperature. A row without positives contributes 0.

    Parameters
    ----------
    queries : torch.Tensor of shape (n, D)
        L2-normalised query features (with gradient).
    contrast : torch.Tensor of shape (2n + m, D)
        The contrast set ``F = [queries; keys; queue]``.
    pos_mask : torch.Tensor of shape (n, 2n + m), bool
    ignore_mask : torch.Tensor of shape (n, 2n + m), bool
    temperature : float, default=0.07

    Returns
    -------
    loss : torch.Tensor
        Scalar, non-negative.

    Examples
    --------
    >>> import torch
    >>> q = torch.eye(2)
    >>> no_queue = torch.zeros(0, dtype=torch.long)
    >>> pos, ign = contrastive_masks(torch.tensor([0, 1]), torch.tensor([1, 1]),
    ...                              no_queue, no_queue)
    >>> loss = noisy_supcon_loss(q, torch.cat([q, q]), pos, ign, temperature=1.0)
    >>> round(loss.item(), 4)  # log(1 + 2 / e)
    0.5514
    """
    contrast = contrast.to(dtype=queries.dtype, device=queries.device)
    pos = pos_mask.to(queries.device).bool()
    ign = ignore_mask.to(queries.device).bool()
    logits = queries @ contrast.t() / temperature  # (n, 2n + m)
    masked = logits.masked_fill(ign, float("-inf"))
    log_denominator = torch.logsumexp(masked, dim=1, keepdim=True)
    log_prob = logits - log_denominator
    pos_f = pos.to(logits.dtype)
    summed = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_anchor = summed / pos_f.sum(dim=1).clamp_min(1.0)
    return 0.0 - per_anchor.mean()  # 0 - 0 is +0, unlike -0

"""The fast contrastive loss of the training loop (``supcon_loss_from_labels``)
against the mask-based ``noisy_supcon_loss(contrastive_masks(...))``, which the
reference-code tests cover: same value and same gradient on the queries."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from _reference_supcon import contrastive_masks, noisy_supcon_loss
from sklearn_npll._methods.label_math import (
    supcon_loss_from_labels,
)


def _both(q_data, k, queue, a_lab, a_flag, q_lab, q_flag, tau):
    """(loss, grad) of the mask-based and of the fast loss."""
    out = []
    for fast in (False, True):
        q = q_data.clone().requires_grad_(True)
        if fast:
            loss = supcon_loss_from_labels(q, k, queue, a_lab, a_flag, q_lab, q_flag, tau)
        else:
            pos, ign = contrastive_masks(a_lab, a_flag, q_lab, q_flag)
            loss = noisy_supcon_loss(q, torch.cat([q, k, queue]), pos, ign, tau)
        loss.backward()
        out.append((loss.detach(), q.grad))
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 7), st.integers(0, 9), st.integers(1, 4), st.integers(1, 5),
       st.sampled_from([0.07, 0.5, 1.0]), st.integers(0, 2**31 - 1))
def test_matches_mask_based_loss(n, m, n_classes, dim, tau, seed):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(m, dim, generator=g, dtype=torch.float64), dim=1)
    a_lab = torch.randint(0, n_classes, (n,), generator=g)
    a_flag = torch.randint(0, 2, (n,), generator=g)
    q_lab = torch.randint(0, n_classes, (m,), generator=g)
    q_flag = torch.randint(0, 2, (m,), generator=g).bool()
    (ref, ref_grad), (fast, fast_grad) = _both(q, k, queue, a_lab, a_flag, q_lab, q_flag, tau)
    assert torch.allclose(fast, ref, rtol=1e-10, atol=1e-10)
    assert torch.allclose(fast_grad, ref_grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("flags", ["all trusted", "none trusted", "mixed"])
def test_training_sized_batch_float32(flags):
    # the sizes of a training step: 2B anchors, a full queue, float32
    g = torch.Generator().manual_seed(1)
    n, m, dim, c = 64, 512, 16, 10
    q = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    k = F.normalize(q + 0.3 * torch.randn(n, dim, generator=g), dim=1)
    queue = F.normalize(torch.randn(m, dim, generator=g), dim=1)
    a_lab = torch.randint(0, c - 1, (n,), generator=g)  # the last class is absent
    a_flag = {"all trusted": torch.ones(n), "none trusted": torch.zeros(n),
              "mixed": (torch.arange(n) < n // 2).float()}[flags].bool()
    q_lab = torch.randint(0, c, (m,), generator=g)
    q_flag = torch.rand(m, generator=g) < 0.5
    (ref, ref_grad), (fast, fast_grad) = _both(q, k, queue, a_lab, a_flag, q_lab, q_flag, 0.07)
    assert torch.allclose(fast, ref, rtol=1e-5)
    assert torch.allclose(fast_grad, ref_grad, rtol=1e-4, atol=1e-7)
    # keys and queue carry no gradient; only the queries are trained
    assert fast_grad.abs().sum() > 0


def test_low_temperature_is_finite():
    g = torch.Generator().manual_seed(2)
    q = F.normalize(torch.randn(6, 4, generator=g), dim=1).requires_grad_(True)
    k = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    loss = supcon_loss_from_labels(q, k, torch.zeros(0, 4), torch.tensor([0, 1, 0, 2, 1, 0]),
                                   torch.tensor([1, 1, 0, 1, 0, 1]), torch.zeros(0),
                                   torch.zeros(0), temperature=1e-3)
    loss.backward()
    assert np.isfinite(loss.item()) and torch.isfinite(q.grad).all()

"""Property tests of the Co-Reg label math (sklearn_npll._methods.label_math).

Each property is chosen so that a wrong formula (inverted ratio, missing
normalisation, wrong mask, wrong order of the moving average, ...) fails it.
Computations run in float64 so tolerances can stay tight.
"""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from _reference_supcon import contrastive_masks, noisy_supcon_loss
from sklearn_npll._methods.label_math import (
    co_pseudo_labels,
    distribution_alignment,
    division_loss,
    minmax_normalize,
    mixed_cross_entropy,
    mixed_mse,
    mixup,
    negative_entropy,
    partial_cross_entropy,
    prototype_loss,
    prototype_probs,
    rampup,
    restrict_to_candidates,
    sample_mixup_lambda,
    sharpen,
    unlabeled_targets,
    update_prototypes,
)

SETTINGS = settings(max_examples=40, deadline=None)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # The tensors here are tiny: intra-op threads only add synchronisation
    # cost (on a busy machine, milliseconds per op). Restored afterwards.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

DT = torch.float64
ATOL = 1e-10


def close(a, b, atol=ATOL, rtol=1e-9):
    return torch.allclose(torch.as_tensor(a, dtype=DT), torch.as_tensor(b, dtype=DT),
                          atol=atol, rtol=rtol)


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


@dataclass
class Problem:
    logits: torch.Tensor  # (n, C)
    Y: torch.Tensor  # (n, C) float 0/1, every row non-empty
    perm: list  # a permutation of range(C)

    @property
    def probs(self):
        return torch.softmax(self.logits, dim=1)

    @property
    def n(self):
        return self.logits.shape[0]

    @property
    def C(self):
        return self.logits.shape[1]


@st.composite
def problems(draw, min_n=1, max_n=6, min_C=2, max_C=6, scale=6.0):
    n = draw(st.integers(min_n, max_n))
    C = draw(st.integers(min_C, max_C))
    logits = draw(arrays(np.float64, (n, C), elements=_floats(-scale, scale)))
    Y = draw(arrays(np.bool_, (n, C)))
    anchor = draw(arrays(np.int64, (n,), elements=st.integers(0, C - 1)))
    Y[np.arange(n), anchor] = True
    perm = draw(st.permutations(list(range(C))))
    return Problem(torch.tensor(logits, dtype=DT), torch.tensor(Y, dtype=DT), list(perm))


def simplex_rows(draw, n, C, scale=6.0):
    logits = draw(arrays(np.float64, (n, C), elements=_floats(-scale, scale)))
    return torch.softmax(torch.tensor(logits, dtype=DT), dim=1)


def on_simplex(t, atol=1e-9):
    return bool((t >= -atol).all()) and close(t.sum(dim=1), torch.ones(t.shape[0]), atol=atol)


def entropy(p):
    return -(p * torch.log(p.clamp_min(1e-300))).sum(dim=1)


# ---------------------------------------------------------------------------
# Partial cross-entropy and negative entropy (warm-up)
# ---------------------------------------------------------------------------


@SETTINGS
@given(problems())
def test_partial_ce_equals_cross_entropy_on_singletons(pb):
    y = torch.argmax(pb.Y * torch.rand(pb.n, pb.C, dtype=DT), dim=1)
    Y = F.one_hot(y, pb.C).to(DT)
    got = partial_cross_entropy(pb.probs, Y, eps=0.0)
    assert close(got, F.cross_entropy(pb.logits, y))
    # with the default eps it is the shifted log
    got_eps = partial_cross_entropy(pb.probs, Y)
    p_y = pb.probs[torch.arange(pb.n), y]
    assert close(got_eps, -torch.log(p_y + 1e-5).mean())


@SETTINGS
@given(problems(min_C=1))
def test_partial_ce_matches_rowwise_definition(pb):
    p, Y = pb.probs, pb.Y
    terms = [-math.log(float((Y[i] * p[i]).sum()) + 1e-5)
             for i in range(pb.n) if Y[i].sum() < pb.C]
    expected = sum(terms) / len(terms) if terms else 0.0
    assert close(partial_cross_entropy(p, Y), expected)
    # bool / int candidate matrices are accepted
    assert close(partial_cross_entropy(p, Y.bool()), expected)
    assert close(partial_cross_entropy(p, Y.long()), expected)


@SETTINGS
@given(problems(), st.data())
def test_partial_ce_falls_as_mass_moves_into_the_set(pb, data):
    Y = pb.Y.clone()
    j_in = data.draw(st.integers(0, pb.C - 1))
    j_out = data.draw(st.integers(0, pb.C - 1).filter(lambda j: j != j_in))
    Y[0, j_in], Y[0, j_out] = 1.0, 0.0  # row 0 is informative
    t1, t2 = sorted(data.draw(st.lists(_floats(0.0, 1.0), min_size=2, max_size=2)))

    def moved(t):
        p = pb.probs.clone()
        mass = t * p[0, j_out]
        p[0, j_out] -= mass
        p[0, j_in] += mass
        return partial_cross_entropy(p, Y)

    l0, l1, l2 = moved(0.0), moved(t1), moved(t2)
    assert l0 >= l1 - 1e-12 and l1 >= l2 - 1e-12
    if float(pb.probs[0, j_out]) * (t2 - t1) > 1e-8:
        assert l2 < l1


def test_partial_ce_zero_without_informative_rows_keeps_graph():
    logits = torch.randn(3, 4, dtype=DT, requires_grad=True)
    loss = partial_cross_entropy(torch.softmax(logits, 1), torch.ones(3, 4))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@SETTINGS
@given(problems())
def test_negative_entropy_definition_and_bounds(pb):
    p = pb.probs
    ne = negative_entropy(p)
    expected = -torch.distributions.Categorical(probs=p).entropy().mean()
    assert close(ne, expected)
    assert -math.log(pb.C) - 1e-12 <= ne.item() <= 1e-12
    assert close(negative_entropy(p[:, pb.perm]), ne)  # class permutation


def test_negative_entropy_safe_at_zero():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=DT, requires_grad=True)
    ne = negative_entropy(p)
    assert close(ne, 0.5 * math.log(0.5))
    ne.backward()
    assert torch.isfinite(p.grad).all()


# ---------------------------------------------------------------------------
# Distribution alignment, division loss, min-max normalisation
# ---------------------------------------------------------------------------


@SETTINGS
@given(problems(), st.data())
def test_distribution_alignment(pb, data):
    p = pb.probs
    memory = simplex_rows(data.draw, 1, pb.C)[0]
    prior = simplex_rows(data.draw, 1, pb.C)[0]
    q = distribution_alignment(p, memory, prior)
    assert on_simplex(q)
    expected = p * prior / memory
    assert close(q, expected / expected.sum(1, keepdim=True))
    # only ratios of memory and prior matter
    assert close(distribution_alignment(p, 3.0 * memory, 0.5 * prior), q)
    # default prior is uniform
    uniform = torch.full((pb.C,), 1.0 / pb.C, dtype=DT)
    assert close(distribution_alignment(p, memory), distribution_alignment(p, memory, uniform))
    # identity when the memory already matches the prior
    assert close(distribution_alignment(p, uniform), p)
    assert close(distribution_alignment(p, prior, prior), p)
    # classes the network over-predicts relative to the prior are scaled down
    j = int(torch.argmax(memory / prior))
    assert bool((q[:, j] <= p[:, j] + 1e-12).all())
    # class permutation equivariance
    P = pb.perm
    assert close(distribution_alignment(p[:, P], memory[P], prior[P]), q[:, P])


@SETTINGS
@given(problems(), st.data())
def test_division_loss(pb, data):
    q = simplex_rows(data.draw, pb.n, pb.C)
    loss = division_loss(q, pb.Y)
    assert loss.shape == (pb.n,)
    expected = torch.tensor([-math.log(max(float(q[i, j]) for j in range(pb.C) if pb.Y[i, j]))
                             for i in range(pb.n)], dtype=DT)
    assert close(loss, expected)
    assert bool((loss >= -1e-12).all())
    # depends on q only through the candidates
    q_changed = q + (1 - pb.Y) * 5.0
    assert close(division_loss(q_changed, pb.Y), loss)
    assert close(division_loss(q[:, pb.perm], pb.Y[:, pb.perm]), loss)


@SETTINGS
@given(arrays(np.float64, st.integers(1, 20), elements=_floats(-1e3, 1e3)),
       _floats(0.01, 100.0), _floats(-100.0, 100.0))
def test_minmax_normalize(x, a, b):
    x = torch.tensor(x, dtype=DT)
    y = minmax_normalize(x)
    assert y.shape == x.shape
    assert bool(((y >= 0) & (y <= 1)).all())
    if float(x.max() - x.min()) > 1e-6:
        assert y.min().item() == 0.0 and close(y.max(), 1.0)
        assert close(minmax_normalize(a * x + b), y, atol=1e-7)  # affine invariance
        # order preserved
        order = torch.argsort(x)
        assert bool((y[order][1:] >= y[order][:-1]).all())
    assert torch.equal(minmax_normalize(torch.full_like(x, 7.0)), torch.zeros_like(x))


# ---------------------------------------------------------------------------
# Co-pseudo-labels, unlabeled targets, sharpening
# ---------------------------------------------------------------------------


@SETTINGS
@given(problems(), st.data())
def test_co_pseudo_labels(pb, data):
    partner_q = simplex_rows(data.draw, pb.n, pb.C)
    own = simplex_rows(data.draw, pb.n, pb.C)
    w = torch.tensor(data.draw(arrays(np.float64, (pb.n,), elements=_floats(0.0, 1.0))))
    r = restrict_to_candidates(pb.Y, partner_q)
    assert bool((r[pb.Y == 0] == 0).all())  # zero outside the set
    assert on_simplex(r)
    expected_r = pb.Y * partner_q / (pb.Y * partner_q).sum(1, keepdim=True)
    assert close(r, expected_r)

    t = co_pseudo_labels(pb.Y, partner_q, own, w)
    assert on_simplex(t)
    assert close(t, w[:, None] * r + (1 - w[:, None]) * own)
    ones, zeros = torch.ones(pb.n, dtype=DT), torch.zeros(pb.n, dtype=DT)
    assert close(co_pseudo_labels(pb.Y, partner_q, own, ones), r)
    assert close(co_pseudo_labels(pb.Y, partner_q, own, zeros), own)
    assert bool((co_pseudo_labels(pb.Y.bool(), partner_q, own, ones)[pb.Y == 0] == 0).all())
    P = pb.perm
    assert close(co_pseudo_labels(pb.Y[:, P], partner_q[:, P], own[:, P], w), t[:, P])


def test_co_pseudo_label_is_not_zero_outside_the_set_counterexample():
    # Candidate property "the co-pseudo-label is zero outside the candidate set"
    # is FALSE for t = w r + (1 - w) pbar whenever w < 1: the network's own mean
    # prediction pbar is not restricted to the candidates (by design, so that a
    # true label missing from a noisy set can be recovered). Only the partner
    # part r (and t at w = 1) is zero outside the set.
    Y = torch.tensor([[1.0, 0.0, 0.0]], dtype=DT)
    partner_q = torch.tensor([[0.5, 0.3, 0.2]], dtype=DT)
    own = torch.tensor([[0.1, 0.2, 0.7]], dtype=DT)
    w = torch.tensor([0.6], dtype=DT)
    t = co_pseudo_labels(Y, partner_q, own, w)
    assert close(t, torch.tensor([[0.64, 0.08, 0.28]], dtype=DT))
    assert (t[0, 1:] > 0).all()  # NOT zero outside the set
    assert (sharpen(t)[0, 1:] > 0).all()  # and sharpening does not zero it either
    assert torch.argmax(t).item() == 0


def test_restrict_to_candidates_falls_back_to_uniform_over_the_set():
    Y = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0]])
    q = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.1, 0.2, 0.3, 0.4]], dtype=DT)
    r = restrict_to_candidates(Y, q)
    assert close(r, torch.tensor([[0.5, 0.0, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]]))


@SETTINGS
@given(problems(), st.data())
def test_unlabeled_targets(pb, data):
    ps = [simplex_rows(data.draw, pb.n, pb.C) for _ in range(4)]
    t = unlabeled_targets(*ps)
    assert on_simplex(t)
    assert close(t, (ps[0] + ps[1] + ps[2] + ps[3]) / 4)
    assert close(unlabeled_targets(*ps[::-1]), t)
    assert close(unlabeled_targets(ps[0]), ps[0])
    assert close(unlabeled_targets(*[x[:, pb.perm] for x in ps]), t[:, pb.perm])
    with pytest.raises(ValueError):
        unlabeled_targets()


@SETTINGS
@given(problems(), _floats(0.05, 1.0), _floats(0.05, 1.0))
def test_sharpen(pb, T1, T2):
    T1, T2 = sorted((T1, T2))
    p = pb.probs
    s = sharpen(p, T1)
    assert on_simplex(s)
    # identity at T = 1 (on normalised rows)
    assert close(sharpen(p, 1.0), p)
    # explicit formula
    expected = p ** (1 / T1)
    expected = expected / expected.sum(1, keepdim=True)
    assert close(s, expected, atol=1e-9)
    # the argmax keeps the largest sharpened value
    idx = torch.argmax(p, dim=1)
    assert bool((s[torch.arange(pb.n), idx] >= s.max(dim=1).values - 1e-12).all())
    # sharpening never raises entropy, and a lower T sharpens more
    assert bool((entropy(s) <= entropy(p) + 1e-9).all())
    assert bool((entropy(s) <= entropy(sharpen(p, T2)) + 1e-9).all())
    assert close(sharpen(p[:, pb.perm], T1), s[:, pb.perm])
    # the default temperature is 0.5
    assert close(sharpen(p), sharpen(p, 0.5))


def test_sharpen_is_safe_at_zero():
    p = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.2, 0.0, 0.8]])
    s = sharpen(p, 0.5)
    assert torch.isfinite(s).all()
    assert torch.allclose(s[0], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(s[1], torch.full((3,), 1 / 3))
    assert torch.allclose(s[2], torch.tensor([0.04, 0.0, 0.64]) / 0.68)
    with pytest.raises(ValueError):
        sharpen(p, 0.0)


# ---------------------------------------------------------------------------
# MixUp and label-space consistency
# ---------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), _floats(0.1, 10.0))
def test_mixup_lambda_range_and_reproducibility(seed, alpha):
    lam = sample_mixup_lambda(alpha, np.random.RandomState(seed))
    assert isinstance(lam, float)
    assert 0.5 <= lam <= 1.0
    assert lam == sample_mixup_lambda(alpha, np.random.RandomState(seed))
    assert sample_mixup_lambda(alpha, seed) == sample_mixup_lambda(alpha, seed)


def test_mixup_lambda_seed_and_bad_alpha():
    rng = np.random.RandomState(3)
    draws = [sample_mixup_lambda(4.0, rng) for _ in range(3)]
    assert len(set(draws)) == 3          # the generator advances
    assert sample_mixup_lambda(4.0, 7) == sample_mixup_lambda(4.0, np.random.default_rng(7))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            sample_mixup_lambda(bad)


@pytest.mark.parametrize("alpha", [4.0, 0.5])
def test_mixup_lambda_follows_folded_beta(alpha):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.RandomState(1234)
    lams = np.array([sample_mixup_lambda(alpha, rng) for _ in range(3000)])

    def folded_cdf(x):  # P(max(L, 1 - L) <= x) = F(x) - F(1 - x)
        return np.clip(stats.beta.cdf(x, alpha, alpha) - stats.beta.cdf(1 - x, alpha, alpha),
                       0.0, 1.0)

    assert stats.kstest(lams, folded_cdf).pvalue > 1e-3
    # consecutive draws differ
    assert len(np.unique(lams)) > 2900


@SETTINGS
@given(problems(), st.data())
def test_mixup(pb, data):
    targets = simplex_rows(data.draw, pb.n, pb.C)
    inputs = torch.tensor(data.draw(arrays(np.float64, (pb.n, 3), elements=_floats(-5, 5))))
    lam = data.draw(_floats(0.5, 1.0))
    perm = torch.tensor(data.draw(st.permutations(list(range(pb.n)))), dtype=torch.long)
    mx, mt = mixup(inputs, targets, lam, perm)
    assert on_simplex(mt)
    assert close(mx, lam * inputs + (1 - lam) * inputs[perm])
    assert close(mt, lam * targets + (1 - lam) * targets[perm])
    # lam = 1 or the identity permutation changes nothing
    assert close(mixup(inputs, targets, 1.0, perm)[1], targets)
    assert close(mixup(inputs, targets, lam, torch.arange(pb.n))[0], inputs)
    # class permutation
    assert close(mixup(inputs, targets[:, pb.perm], lam, perm)[1], mt[:, pb.perm])


@SETTINGS
@given(problems(), st.data())
def test_mixed_cross_entropy_and_mse(pb, data):
    targets = simplex_rows(data.draw, pb.n, pb.C)
    lx = mixed_cross_entropy(pb.logits, targets)
    assert close(lx, F.cross_entropy(pb.logits, targets))
    y = torch.argmax(targets, 1)
    assert close(mixed_cross_entropy(pb.logits, F.one_hot(y, pb.C).to(DT)),
                 F.cross_entropy(pb.logits, y))
    lu = mixed_mse(pb.logits, targets)
    assert close(lu, ((pb.probs - targets) ** 2).sum() / (pb.n * pb.C))
    assert close(mixed_mse(pb.logits, pb.probs), 0.0)
    # cross-entropy is minimised when softmax(logits) == targets (Gibbs)
    assert lx >= mixed_cross_entropy(torch.log(targets), targets) - 1e-9
    P = pb.perm
    assert close(mixed_cross_entropy(pb.logits[:, P], targets[:, P]), lx)
    assert close(mixed_mse(pb.logits[:, P], targets[:, P]), lu)


@SETTINGS
@given(st.integers(0, 200), st.integers(0, 50), st.integers(1, 50), st.integers(0, 100))
def test_rampup(epoch, it, n_it, warmup):
    it = min(it, n_it - 1)
    r = rampup(epoch, it, n_it, warmup)
    assert 0.0 <= r <= 1.0
    x = (epoch + it / n_it - warmup) / 16
    assert close(r, min(max(x, 0.0), 1.0))
    assert rampup(epoch + 1, it, n_it, warmup) >= r  # non-decreasing


def test_rampup_values():
    assert rampup(10, 0, 5, warmup_epochs=10) == 0.0
    assert rampup(9, 4, 5, warmup_epochs=10) == 0.0
    assert rampup(18, 0, 5, warmup_epochs=10) == 0.5
    assert rampup(18, 0, 5, warmup_epochs=10, length=8) == 1.0
    assert rampup(100, 0, 5, warmup_epochs=10) == 1.0


# ---------------------------------------------------------------------------
# Prototypes
# ---------------------------------------------------------------------------


def _raw_update(O, z, labels, gamma):
    O = O.clone()
    for z_i, c in zip(z, labels.tolist()):
        O[c] = gamma * O[c] + (1 - gamma) * z_i
    return O


def update_prototypes_loop(prototypes, z, labels, gamma=0.999):
    """Reference: the sample-by-sample update, then row normalisation."""
    return F.normalize(_raw_update(prototypes, z, labels, gamma), p=2, dim=1)


@st.composite
def prototype_cases(draw):
    C = draw(st.integers(1, 6))
    D = draw(st.integers(1, 5))
    n = draw(st.integers(0, 12))
    z = torch.tensor(draw(arrays(np.float64, (n, D), elements=_floats(-3, 3))))
    labels = torch.tensor(draw(arrays(np.int64, (n,), elements=st.integers(0, C - 1))),
                          dtype=torch.long)
    if draw(st.booleans()):
        O = torch.zeros(C, D, dtype=DT)
    else:
        O = torch.tensor(draw(arrays(np.float64, (C, D), elements=_floats(-3, 3))))
    gamma = draw(st.sampled_from([0.999, 0.9, 0.5]) | _floats(0.0, 1.0))
    perm = draw(st.permutations(list(range(C))))
    return O, z, labels, gamma, list(perm)


@SETTINGS
@given(prototype_cases())
def test_update_prototypes_matches_loop(case):
    O, z, labels, gamma, perm = case
    O_before = O.clone()
    new = update_prototypes(O, z, labels, gamma)
    assert torch.equal(O, O_before)  # not modified in place
    assert new is not O
    ref = update_prototypes_loop(O, z, labels, gamma)
    assert close(new, ref, atol=1e-9)
    # rows are unit vectors unless they are (numerically) zero before normalising
    raw_norm = torch.linalg.norm(_raw_update(O, z, labels, gamma), dim=1)
    norms = torch.linalg.norm(new, dim=1)
    big = raw_norm > 1e-6
    assert close(norms[big], torch.ones(int(big.sum())), atol=1e-9)
    assert bool((norms <= 1 + 1e-9).all())
    # class relabelling permutes the rows: new class of old class c is inv[c]
    inv = torch.argsort(torch.tensor(perm))
    new_p = update_prototypes(O[perm], z, inv[labels], gamma)
    assert close(new_p, new[perm], atol=1e-9)


def test_update_prototypes_order_matters_and_zero_rows_stay_zero():
    O = torch.zeros(3, 2, dtype=DT)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DT)
    a = update_prototypes(O, z, torch.tensor([0, 0]), gamma=0.5)
    b = update_prototypes(O, z.flip(0), torch.tensor([0, 0]), gamma=0.5)
    # 0.5 * (0.5 * e1) + 0.5 * e2 -> later samples weigh more
    assert close(a[0], F.normalize(torch.tensor([0.25, 0.5], dtype=DT), dim=0))
    assert close(b[0], F.normalize(torch.tensor([0.5, 0.25], dtype=DT), dim=0))
    assert torch.equal(a[1:], torch.zeros(2, 2, dtype=DT))
    # no gradient flows into the prototypes
    zg = z.clone().requires_grad_(True)
    assert not update_prototypes(O, zg, torch.tensor([0, 1])).requires_grad


@SETTINGS
@given(problems(), st.data())
def test_prototype_probs_and_loss(pb, data):
    D = data.draw(st.integers(1, 4))
    z = F.normalize(torch.tensor(data.draw(arrays(np.float64, (pb.n, D),
                                                  elements=_floats(-1, 1)))) + 1e-3, dim=1)
    O = F.normalize(torch.tensor(data.draw(arrays(np.float64, (pb.C, D),
                                                  elements=_floats(-1, 1)))) + 1e-3, dim=1)
    s = prototype_probs(z, O)
    assert on_simplex(s)
    assert close(s, torch.softmax(z @ O.T / 0.3, dim=1))
    assert close(prototype_probs(z, O[pb.perm]), s[:, pb.perm])

    ta = simplex_rows(data.draw, pb.n, pb.C)
    perm_rows = torch.tensor(data.draw(st.permutations(list(range(pb.n)))))
    tb = ta[perm_rows]
    lam = data.draw(_floats(0.5, 1.0))
    n_lab = data.draw(st.integers(0, pb.n))
    lu = data.draw(_floats(0.0, 2.0))
    loss = prototype_loss(s, ta, tb, lam, n_lab, lambda_u=lu)

    def kl(t, q):  # sum over rows of KL(t || q)
        return float((t * (torch.log(t) - torch.log(q))).sum())

    expected = 0.0
    if n_lab:
        L = slice(0, n_lab)
        expected += (lam * kl(ta[L], s[L]) + (1 - lam) * kl(tb[L], s[L])) / n_lab
    if n_lab < pb.n:
        U = slice(n_lab, pb.n)
        expected += lu * (lam * ((s[U] - ta[U]) ** 2).mean().item()
                          + (1 - lam) * ((s[U] - tb[U]) ** 2).mean().item())
    assert close(loss, expected, atol=1e-9)
    assert loss.item() >= -1e-12
    assert close(prototype_loss(s, s, s, lam, n_lab, lu), 0.0)
    P = pb.perm
    assert close(prototype_loss(s[:, P], ta[:, P], tb[:, P], lam, n_lab, lu), loss)


def test_prototype_loss_gradient_and_default_lambda_u():
    logits = torch.randn(6, 3, dtype=DT, requires_grad=True)
    s = torch.softmax(logits, 1)
    t = torch.softmax(torch.randn(6, 3, dtype=DT), 1)
    loss = prototype_loss(s, t, t.flip(0), 0.7, n_labeled=4)
    assert close(loss, prototype_loss(s, t, t.flip(0), 0.7, 4, lambda_u=1.0))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---------------------------------------------------------------------------
# Noisy supervised contrastive loss
# ---------------------------------------------------------------------------


def masks_reference(a_lab, a_flag, q_lab, q_flag):
    """Straight transcription of the rules, one entry at a time."""
    n, m = len(a_lab), len(q_lab)
    lab = list(a_lab) + list(a_lab) + list(q_lab)
    flag = list(a_flag) + list(a_flag) + list(q_flag)
    pos = torch.zeros(n, 2 * n + m, dtype=torch.bool)
    ign = torch.zeros(n, 2 * n + m, dtype=torch.bool)
    for i in range(n):
        for a in range(2 * n + m):
            if a == i:
                ign[i, a] = True  # self excluded
            elif a == i + n:
                pos[i, a] = True  # own key
            elif lab[a] == a_lab[i]:
                if a_flag[i] == 1 and flag[a] == 1:
                    pos[i, a] = True
                else:
                    ign[i, a] = True
    return pos, ign


@st.composite
def contrast_cases(draw):
    n = draw(st.integers(1, 6))
    m = draw(st.integers(0, 8))
    C = draw(st.integers(1, 4))
    D = draw(st.integers(1, 4))
    a_lab = draw(st.lists(st.integers(0, C - 1), min_size=n, max_size=n))
    a_flag = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    q_lab = draw(st.lists(st.integers(0, C - 1), min_size=m, max_size=m))
    q_flag = draw(st.lists(st.integers(0, 1), min_size=m, max_size=m))
    feats = torch.tensor(draw(arrays(np.float64, (2 * n + m, D), elements=_floats(-1, 1))))
    feats = F.normalize(feats + 1e-3, dim=1)
    class_perm = draw(st.permutations(list(range(C))))
    col_perm = draw(st.permutations(list(range(2 * n + m))))
    return a_lab, a_flag, q_lab, q_flag, feats, list(class_perm), list(col_perm)


def _t(x):
    return torch.tensor(x, dtype=torch.long)


@SETTINGS
@given(contrast_cases())
def test_contrastive_masks(case):
    a_lab, a_flag, q_lab, q_flag, _, class_perm, _ = case
    n = len(a_lab)
    pos, ign = contrastive_masks(_t(a_lab), _t(a_flag), _t(q_lab), _t(q_flag))
    assert pos.dtype == torch.bool and ign.dtype == torch.bool
    assert pos.shape == ign.shape == (n, 2 * n + len(q_lab))
    ref_pos, ref_ign = masks_reference(a_lab, a_flag, q_lab, q_flag)
    assert torch.equal(pos, ref_pos) and torch.equal(ign, ref_ign)
    rows = torch.arange(n)
    assert pos[rows, rows + n].all()  # own key always positive
    assert ign[rows, rows].all() and not pos[rows, rows].any()  # self excluded
    assert not (pos & ign).any()  # never both
    for i in range(n):
        if a_flag[i] == 0:
            assert pos[i].sum() == 1  # only its own key
    # bool flags give the same masks; relabelling classes changes nothing
    pos_b, ign_b = contrastive_masks(_t(a_lab), _t(a_flag).bool(), _t(q_lab), _t(q_flag).bool())
    assert torch.equal(pos_b, pos) and torch.equal(ign_b, ign)
    cp = _t(class_perm)
    pos_p, ign_p = contrastive_masks(cp[_t(a_lab)], _t(a_flag), cp[_t(q_lab)], _t(q_flag))
    assert torch.equal(pos_p, pos) and torch.equal(ign_p, ign)


def supcon_reference(q, feats, pos, ign, tau):
    total = 0.0
    for i in range(q.shape[0]):
        sims = [float(q[i] @ feats[a]) / tau for a in range(feats.shape[0])]
        denom = math.log(sum(math.exp(sims[a]) for a in range(len(sims))
                             if not ign[i, a] and a != i))
        ps = [a for a in range(len(sims)) if pos[i, a]]
        total += sum(sims[a] - denom for a in ps) / len(ps)
    return -total / q.shape[0]


@SETTINGS
@given(contrast_cases(), st.sampled_from([0.07, 0.5, 1.0]))
def test_noisy_supcon_loss(case, tau):
    a_lab, a_flag, q_lab, q_flag, feats, _, col_perm = case
    n = len(a_lab)
    pos, ign = contrastive_masks(_t(a_lab), _t(a_flag), _t(q_lab), _t(q_flag))
    q = feats[:n]
    loss = noisy_supcon_loss(q, feats, pos, ign, temperature=tau)
    assert torch.isfinite(loss) and loss.item() >= -1e-12
    assert close(loss, supcon_reference(q, feats, pos, ign, tau), atol=1e-9)
    # reordering the contrast set (with its masks) changes nothing
    cp = _t(col_perm)
    assert close(noisy_supcon_loss(q, feats[cp], pos[:, cp], ign[:, cp], tau), loss, atol=1e-9)
    if tau == 0.07:
        assert close(noisy_supcon_loss(q, feats, pos, ign), loss)  # default tau


def test_noisy_supcon_loss_stable_and_differentiable():
    torch.manual_seed(0)
    n, m, D = 5, 7, 8
    q = F.normalize(torch.randn(n, D), dim=1).requires_grad_(True)
    k = F.normalize(torch.randn(n, D), dim=1)
    queue = F.normalize(torch.randn(m, D), dim=1)
    pos, ign = contrastive_masks(torch.tensor([0, 1, 0, 2, 1]), torch.tensor([1, 1, 0, 1, 0]),
                                 torch.randint(0, 3, (m,)), torch.randint(0, 2, (m,)))
    loss = noisy_supcon_loss(q, torch.cat([q, k, queue]), pos, ign, temperature=1e-3)
    assert torch.isfinite(loss) and loss.item() >= 0
    loss.backward()
    assert torch.isfinite(q.grad).all()
    # identical features: every logit is equal; loss = log(#non-ignored) per anchor
    f = torch.ones(2 * n, 1, dtype=DT)
    p2, i2 = contrastive_masks(torch.arange(n), torch.ones(n), torch.zeros(0), torch.zeros(0))
    assert close(noisy_supcon_loss(f[:n], f, p2, i2), math.log(2 * n - 1))


# ---------------------------------------------------------------------------
# Class-permutation equivariance of the whole pseudo-label pipeline
# ---------------------------------------------------------------------------


@SETTINGS
@given(problems(), st.data())
def test_pipeline_is_equivariant_under_class_permutation(pb, data):
    P = pb.perm
    memory = simplex_rows(data.draw, 1, pb.C)[0]
    own = simplex_rows(data.draw, pb.n, pb.C)
    w = torch.tensor(data.draw(arrays(np.float64, (pb.n,), elements=_floats(0.0, 1.0))))

    def pipeline(probs, Y, memory, own):
        q = distribution_alignment(probs, memory)
        losses = minmax_normalize(division_loss(q, Y))
        t = sharpen(co_pseudo_labels(Y, q, own, w))
        return partial_cross_entropy(probs, Y), negative_entropy(probs), losses, t

    pce, ne, losses, t = pipeline(pb.probs, pb.Y, memory, own)
    pce_p, ne_p, losses_p, t_p = pipeline(pb.probs[:, P], pb.Y[:, P], memory[P], own[:, P])
    assert close(pce_p, pce) and close(ne_p, ne)
    assert close(losses_p, losses, atol=1e-8)
    assert close(t_p, t[:, P])

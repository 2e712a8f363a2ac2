"""Co-Reg's epoch loop against a plain, independent implementation.

``plain_*`` below re-implement the specification (co-reg.md) with loops and
explicit formulas, without the library's label math. A short fit on a tiny
MLP with batch norm records the networks at the start of every Co-Reg epoch
and the MixUp draw of every iteration; the plain code replays those epochs
from the recorded start (same inputs, views, MixUp weights, permutations and
queue) and must reach the same divisions, losses, parameters, key encoder,
prototypes and queue. The augmentations are replaced by fixed affine maps so
that the views are known without replaying the generator.
"""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture

import sklearn_npll._methods.label_math as dis
from _reference_supcon import contrastive_masks, noisy_supcon_loss
import sklearn_npll._methods.division as division_module
import sklearn_npll._methods.coreg as coreg_module
from sklearn_npll import CoRegClassifier, make_partial_labels
from sklearn_npll._methods.division import trust_probabilities
from sklearn_npll._nn.networks import CoRegNetwork, CoRegState

WARMUP = 2
START = 0          # contrastive terms off at epoch 2, on at epoch 3
EPOCHS = 4
B = 8
QUEUE = 256        # large enough never to wrap in this fit
LR = 0.5           # large steps make a wrong gradient visible in the parameters
WD = 5e-4
MOM = 0.9


def weak(x):
    return 0.5 * x + 0.1


def strong(x):
    return 0.4 * x - 0.1


class RecordingTrainer(coreg_module.CoRegTrainer):
    """Records the networks, optimizer buffers and learning rate at the start
    of every Co-Reg epoch."""

    def coreg_epoch(self, epoch):
        clf = self.estimator
        clf.starts_[epoch] = {
            "nets": [copy.deepcopy(clf.module_), copy.deepcopy(clf.module2_)],
            "prototypes": clf.coreg_state_.prototypes.clone(),
            "buffers": [_momentum_buffers(net, clf.optimizer_) for net in self.networks],
            "lr": clf.optimizer_.param_groups[0]["lr"],
        }
        clf.current_epoch_ = epoch
        return super().coreg_epoch(epoch)


class RecordingCoReg(CoRegClassifier):
    """Co-Reg with fixed affine views, recording its epochs."""

    trainer_class = RecordingTrainer

    def _augmenters(self):
        return {"weak": lambda x, g: weak(x), "strong": lambda x, g: strong(x),
                "test": lambda x, g: x}



def _momentum_buffers(net, opt):
    return {name: opt.state[p]["momentum_buffer"].clone()
            for name, p in net.named_parameters() if p in opt.state}


def make_data(n_per_class=10, n_classes=3, d=5, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(0, 3, (n_classes, d))
    X = np.concatenate([rng.normal(c, 1.5, (n_per_class, d)) for c in centers])
    y = np.repeat(np.arange(n_classes), n_per_class)
    Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.3, random_state=1)
    return X.astype(np.float32), y, Y.astype(np.float32)


@pytest.fixture(scope="module")
def recorded():
    X, _, Y = make_data()
    draws = []
    original_mixup = dis.mixup

    def spy(inputs, targets, lam, perm):
        draws.append({"epoch": clf.current_epoch_, "inputs": inputs.detach().clone(),
                      "lam": lam, "perm": perm.clone()})
        return original_mixup(inputs, targets, lam, perm)

    clf = RecordingCoReg(max_epochs=EPOCHS, warmup_epochs=WARMUP, start_contrastive=START,
                         batch_size=B, lr=LR, queue_size=QUEUE, proj_dim=8,
                         module__hidden_sizes=(8,), random_state=0)
    original_trust = coreg_module.trust_probabilities

    def trust_spy(losses, *, random_state=None, **kwargs):
        clf.starts_[clf.current_epoch_].setdefault("mixture_rng", []).append(
            copy.deepcopy(random_state))
        return original_trust(losses, random_state=random_state, **kwargs)

    clf.starts_ = {}
    dis.mixup, coreg_module.trust_probabilities = spy, trust_spy
    try:
        clf.fit(X, Y)
    finally:
        dis.mixup, coreg_module.trust_probabilities = original_mixup, original_trust
    return clf, X, Y, draws


# ---------------------------------------------------------------- plain code
def plain_division(net, X, Y, history, rng, history_length=5):
    """Division of one network, as co-reg.md words it; ``rng`` is the
    mixture's random state as the loop passed it (its k-means
    initialisation is random and, on few samples, its local optimum too)."""
    C = Y.shape[1]
    net.eval()
    with torch.no_grad():
        p = torch.softmax(net(weak(X)), 1)
    memory = p                                  # every row is refreshed
    q = p / (memory.mean(0) / (1.0 / C))
    q = q / q.sum(1, keepdim=True)
    loss = torch.tensor([-math.log(max(float(q[i, j]) for j in range(C) if Y[i, j]))
                         for i in range(len(X))])
    loss = (loss - loss.min()) / (loss.max() - loss.min())
    history.append(loss)
    averaged = torch.stack(history[-history_length:]).mean(0).double().numpy()
    gmm = GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=rng)
    gmm.fit(averaged.reshape(-1, 1))
    w = gmm.predict_proba(averaged.reshape(-1, 1))[:, np.argmin(gmm.means_.ravel())]
    return {"w": torch.tensor(w, dtype=torch.float32), "q": q, "memory": p,
            "P": np.flatnonzero(w > 0.5), "U": np.flatnonzero(w <= 0.5)}


def plain_sharpen(t, T=0.5):
    t = t ** (1 / T)
    return t / t.sum(1, keepdim=True)


def plain_supcon(q, F_all, labels, flags, n, tau=0.07):
    """Per-anchor loop over the contrast set."""
    total = 0.0
    for i in range(n):
        pos, keep = [], []
        for a in range(F_all.shape[0]):
            if a == i:
                continue
            same = labels[a] == labels[i]
            if a == i + n:
                pos.append(a)
                keep.append(a)
            elif flags[i] and same and flags[a]:
                pos.append(a)
                keep.append(a)
            elif same:
                continue                        # ignored
            else:
                keep.append(a)
        logits = torch.stack([q[i] @ F_all[a] / tau for a in keep])
        log_den = torch.log(torch.exp(logits).sum())
        total = total + sum(q[i] @ F_all[a] / tau - log_den for a in pos) / len(pos)
    return -total / n


def plain_train(epoch, net, partner, div_partner, X, Y, O, buffers, lr, draws, key_m=0.999):
    """Train ``net`` on its partner's division for one epoch; return the
    per-iteration loss terms. Updates net, O (in place) and buffers."""
    P, U = div_partner["P"], div_partner["U"]
    num_iter = len(P) // B + 1
    assert len(draws) == num_iter, "iterations per epoch"
    contrast_on = epoch > WARMUP + START
    key_on = epoch >= WARMUP + START
    S = strong(X)
    terms = []
    for it, draw in enumerate(draws):
        # recover the batch order from the mixed inputs: rows [x, x, u, u]
        rows = torch.cdist(draw["inputs"], S).argmin(1).numpy()
        nx = int(np.isin(rows, P).sum()) // 2
        ix, iu = rows[:nx], rows[2 * nx:2 * nx + (len(rows) - 2 * nx) // 2]
        assert np.isin(ix, P).all() and np.isin(iu, U).all()
        np.testing.assert_array_equal(rows, np.r_[ix, ix, iu, iu])
        w, q_b = div_partner["w"], div_partner["q"]
        net.train()
        partner.eval()
        with torch.no_grad():
            out = [net(weak(X[idx]), return_features=True) for idx in (ix, ix, iu, iu)]
            pa = [torch.softmax(o[0], 1) for o in out]
            pb = [torch.softmax(partner(weak(X[iu])), 1) for _ in range(2)]
            r = Y[ix] * q_b[ix]
            r = r / r.sum(1, keepdim=True)
            pbar = (pa[0] + pa[1]) / 2
            tx = plain_sharpen(w[ix, None] * r + (1 - w[ix, None]) * pbar)
            tu = plain_sharpen((pa[2] + pa[3] + pb[0] + pb[1]) / 4)
        inputs = torch.cat([S[ix], S[ix], S[iu], S[iu]])
        targets = torch.cat([tx, tx, tu, tu])
        torch.testing.assert_close(draw["inputs"], inputs)
        lam, perm = draw["lam"], draw["perm"]
        mixed = lam * inputs + (1 - lam) * inputs[perm]
        mixed_t = lam * targets + (1 - lam) * targets[perm]
        logits, z_mixed = net(mixed, return_features=True)
        n2 = 2 * nx
        L_x = -(mixed_t[:n2] * torch.log_softmax(logits[:n2], 1)).sum(1).mean()
        L_u = ((torch.softmax(logits[n2:], 1) - mixed_t[n2:]) ** 2).mean()
        ramp = min(max((epoch + it / num_iter - WARMUP) / 16, 0.0), 1.0)
        loss = L_x + ramp * L_u
        step = {"loss_x": L_x.item(), "loss_u": L_u.item()}
        z_w1 = out[0][1]
        for i in range(nx):                     # the reference's sample-by-sample loop
            c = int(tx[i].argmax())
            O[c] = 0.999 * O[c] + 0.001 * z_w1[i]
        O.copy_(O / O.norm(dim=1, keepdim=True).clamp_min(1e-12))
        if contrast_on:
            s = torch.softmax(z_mixed @ O.t() / 0.3, 1)
            ta, tb = targets, targets[perm]
            kl_a = (ta[:n2] * (torch.log(ta[:n2].clamp_min(1e-30)) - torch.log(s[:n2]))).sum() / n2
            kl_b = (tb[:n2] * (torch.log(tb[:n2].clamp_min(1e-30)) - torch.log(s[:n2]))).sum() / n2
            L_p = (lam * kl_a + (1 - lam) * kl_b
                   + lam * ((s[n2:] - ta[n2:]) ** 2).mean()
                   + (1 - lam) * ((s[n2:] - tb[n2:]) ** 2).mean())
            loss = loss + 0.1 * L_p
            step["loss_prototype"] = L_p.item()
        if key_on:
            with torch.no_grad():
                for k, v in zip(net.key_parameters(), net.live_parameters()):
                    k.copy_(key_m * k + (1 - key_m) * v)
                keys = F.normalize(net.key_projector(net.key_encoder(
                    torch.cat([S[ix], S[iu]]))), dim=1)
            anchor_t = torch.cat([tx, tu])
            flags = [True] * nx + [False] * len(iu)
            qz, qt, qf = net.queue()
            if contrast_on:
                _, queries = net(torch.cat([S[ix], S[iu]]), return_features=True)
                F_all = torch.cat([queries, keys, qz])
                labels = torch.cat([anchor_t, anchor_t, qt]).argmax(1).tolist()
                all_flags = flags + flags + qf.tolist()
                L_c = plain_supcon(queries, F_all, labels, all_flags, len(anchor_t))
                loss = loss + 0.1 * L_c
                step["loss_contrastive"] = L_c.item()
            net.enqueue(keys, anchor_t, torch.tensor(flags))
        named = [(k, p) for k, p in net.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        with torch.no_grad():
            for (name, p), g in zip(named, grads):
                if g is None:
                    continue
                d = g + WD * p
                buffers[name] = MOM * buffers[name] + d if name in buffers else d.clone()
                p -= lr * buffers[name]
        terms.append(step)
    return terms


def replay_epoch(clf, epoch, X, Y, draws, histories):
    start = clf.starts_[epoch]
    nets = [copy.deepcopy(n) for n in start["nets"]]
    if epoch >= WARMUP + START:
        for net in nets:                        # re-synchronise the key encoders
            with torch.no_grad():
                for k, v in zip(net.key_parameters(), net.live_parameters()):
                    k.copy_(v)
    divisions = [plain_division(net, X, Y, histories[k], start["mixture_rng"][k])
                 for k, net in enumerate(nets)]
    O = start["prototypes"].clone()
    buffers = [dict(b) for b in start["buffers"]]
    mine = [d for d in draws if d["epoch"] == epoch]
    n_a = len(divisions[1]["P"]) // B + 1
    terms = plain_train(epoch, nets[0], nets[1], divisions[1], X, Y, O, buffers[0],
                        start["lr"], mine[:n_a])
    terms += plain_train(epoch, nets[1], nets[0], divisions[0], X, Y, O, buffers[1],
                         start["lr"], mine[n_a:])
    return nets, divisions, O, terms


@pytest.fixture(scope="module")
def replayed(recorded):
    clf, X, Y, draws = recorded
    Xt, Yt = torch.as_tensor(X), torch.as_tensor(Y)
    histories = [[], []]
    return {epoch: replay_epoch(clf, epoch, Xt, Yt, draws, histories)
            for epoch in range(WARMUP, EPOCHS)}


# ---------------------------------------------------------------- the tests
def test_divisions_are_not_trivial(replayed):
    # the checks below mean something only if the two networks split the
    # data, and differently
    for _, divisions, _, _ in replayed.values():
        for d in divisions:
            assert 0 < len(d["P"]) < 30
    _, divisions, _, _ = replayed[EPOCHS - 1]
    assert not np.array_equal(divisions[0]["w"], divisions[1]["w"])


def test_division_matches_plain_implementation(recorded, replayed):
    clf, *_ = recorded
    for epoch, (_, divisions, _, _) in replayed.items():
        assert clf.history_[epoch, "n_trusted_a"] == len(divisions[0]["P"])
        assert clf.history_[epoch, "n_trusted_b"] == len(divisions[1]["P"])
    _, divisions, _, _ = replayed[EPOCHS - 1]
    np.testing.assert_allclose(clf.trust_[0], divisions[0]["w"].numpy(), atol=1e-4)
    np.testing.assert_allclose(clf.trust_[1], divisions[1]["w"].numpy(), atol=1e-4)
    # memory: every row holds the division pass's prediction
    for net, d in zip((clf.module_, clf.module2_), divisions):
        torch.testing.assert_close(net.memory, d["memory"], atol=1e-5, rtol=1e-4)


def test_epoch_matches_plain_implementation(recorded, replayed):
    """Losses, parameters, key encoder, prototypes and queue after the last
    epoch (contrastive and prototype terms on)."""
    clf, *_ = recorded
    nets, _, O, terms = replayed[EPOCHS - 1]
    for name in ("loss_x", "loss_u", "loss_prototype", "loss_contrastive"):
        expected = np.mean([t[name] for t in terms if name in t])
        assert clf.history_[-1, name] == pytest.approx(expected, rel=1e-4, abs=1e-6), name
    for plain, net in zip(nets, (clf.module_, clf.module2_)):
        for (name, p), (_, q) in zip(plain.named_parameters(), net.named_parameters()):
            torch.testing.assert_close(q, p, atol=2e-5, rtol=1e-4, msg=name)
        qz, qt, qf = net.queue()
        pz, pt, pf = plain.queue()
        torch.testing.assert_close(qz, pz, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(qt, pt, atol=2e-5, rtol=1e-4)
        assert torch.equal(qf, pf)
    torch.testing.assert_close(clf.coreg_state_.prototypes, O, atol=2e-5, rtol=1e-4)


def test_epoch_before_the_contrastive_terms_matches_plain_implementation(recorded, replayed):
    clf, *_ = recorded
    nets, _, _, terms = replayed[WARMUP + START]
    assert "loss_prototype" not in clf.history_[WARMUP + START]
    assert "loss_contrastive" not in clf.history_[WARMUP + START]
    assert clf.history_[WARMUP + START, "loss_x"] == pytest.approx(
        np.mean([t["loss_x"] for t in terms]), rel=1e-4)
    # the parameters at the start of the next epoch are the plain ones
    after = clf.starts_[WARMUP + START + 1]["nets"]
    for plain, net in zip(nets, after):
        for (name, p), (_, q) in zip(plain.named_parameters(), net.named_parameters()):
            torch.testing.assert_close(q, p, atol=2e-5, rtol=1e-4, msg=name)


def test_iterations_per_epoch(recorded, replayed):
    clf, _, _, draws = recorded
    for epoch, (_, divisions, _, _) in replayed.items():
        expected = sum(len(d["P"]) // B + 1 for d in divisions)
        assert sum(d["epoch"] == epoch for d in draws) == expected
        assert clf.history_[epoch, "train_batch_count"] == expected


@pytest.mark.parametrize("start", [0, 2])
def test_epoch_each_term_switches_on(start):
    X, _, Y = make_data()
    clf = CoRegClassifier(max_epochs=WARMUP + start + 2, warmup_epochs=WARMUP,
                          start_contrastive=start, batch_size=B, queue_size=64, proj_dim=8,
                          module__hidden_sizes=(8,), random_state=0).fit(X, Y)
    h = clf.history_
    on = WARMUP + start + 1                     # first epoch after W + start_contrastive
    for epoch in range(WARMUP):
        assert "loss_pce" in h[epoch] and "loss_x" not in h[epoch]
    for epoch in range(WARMUP, on):
        assert "loss_x" in h[epoch] and "loss_u" in h[epoch]
        assert "loss_prototype" not in h[epoch] and "loss_contrastive" not in h[epoch]
    assert "loss_prototype" in h[on] and "loss_contrastive" in h[on]


# ---------------------------------------------------------- parts on their own
def test_key_encoder_moves_towards_live_weights():
    torch.manual_seed(0)
    net = CoRegNetwork(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)),
                       2, (3,), n_samples=4, proj_dim=4, queue_size=8)
    with torch.no_grad():
        for k in net.key_parameters():
            k.normal_()
    before = [k.clone() for k in net.key_parameters()]
    net.momentum_update(0.9)
    for k, old, live in zip(net.key_parameters(), before, net.live_parameters()):
        torch.testing.assert_close(k, 0.9 * old + 0.1 * live)


def test_loss_history_averages_the_last_epochs():
    state = CoRegState(n_classes=2, n_samples=3, proj_dim=4, history_length=5)
    pushed = [torch.full((3,), float(e)) for e in range(7)]
    for e, losses in enumerate(pushed):
        avg = state.push_losses(1, losses)
        expected = torch.stack(pushed[max(0, e - 4):e + 1]).mean(0)
        torch.testing.assert_close(avg, expected)
    # network 0's history is separate
    torch.testing.assert_close(state.push_losses(0, torch.ones(3)), torch.ones(3))


def _gmm_posterior(losses, **settings):
    gmm = GaussianMixture(2, random_state=0, **settings).fit(losses.reshape(-1, 1))
    return gmm.predict_proba(losses.reshape(-1, 1))[:, np.argmin(gmm.means_.ravel())]


def _mixture_cases():
    # A tight clean mode next to spread losses (max_iter and reg_covar
    # matter), and a slowly converging mixture (tol matters).
    rng = np.random.RandomState(192)
    a = rng.randint(1, 40)
    tight = np.r_[rng.normal(0.01, 0.005, a), rng.uniform(0, 1, 40), rng.normal(0.3, 0.2, 30)]
    rng = np.random.RandomState(0)
    a = rng.randint(1, 40)
    slow = np.r_[rng.normal(0.1, 0.05, a), rng.uniform(0, 1, 40), rng.normal(0.6, 0.2, 30)]
    return tight, slow


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mixture_uses_the_reference_settings():
    cases = _mixture_cases()
    reference = [_gmm_posterior(x, max_iter=10, tol=1e-2, reg_covar=5e-4) for x in cases]
    for x, ref in zip(cases, reference):
        np.testing.assert_allclose(trust_probabilities(x, random_state=0), ref, atol=1e-8)
    # each setting changes the posterior of one of the cases (so the check
    # above can fail)
    for changed in (dict(max_iter=100, tol=1e-2, reg_covar=5e-4),
                    dict(max_iter=10, tol=1e-3, reg_covar=5e-4),
                    dict(max_iter=10, tol=1e-2, reg_covar=1e-6)):
        assert max(np.abs(_gmm_posterior(x, **changed) - ref).max()
                   for x, ref in zip(cases, reference)) > 1e-2, changed


def test_division_fits_the_mixture_with_the_reference_settings(monkeypatch):
    seen = []

    class Recording(GaussianMixture):
        def fit(self, X, y=None):
            seen.append((self.n_components, self.max_iter, self.tol, self.reg_covar))
            return super().fit(X, y)

    monkeypatch.setattr(division_module, "GaussianMixture", Recording)
    X, _, Y = make_data()
    CoRegClassifier(max_epochs=WARMUP + 1, warmup_epochs=WARMUP, batch_size=B,
                    queue_size=64, proj_dim=8, module__hidden_sizes=(8,),
                    random_state=0).fit(X, Y)
    assert seen == [(2, 10, 1e-2, 5e-4)] * 2


def test_constant_losses_trust_everything():
    np.testing.assert_array_equal(trust_probabilities(np.full(10, 0.3)), np.ones(10))
    np.testing.assert_array_equal(trust_probabilities(np.zeros(1)), np.ones(1))


# ---------------------------------------------------------- gradient checks
def _double(*shape, seed=0, positive=False, simplex=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(*shape, generator=g, dtype=torch.float64) + 0.05
    if simplex:
        t = t / t.sum(1, keepdim=True)
    return t


def _check(fn, *inputs):
    inputs = [x.clone().requires_grad_(True) for x in inputs]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradients_of_the_warmup_losses():
    Y = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]])
    logits = _double(4, 3) * 3
    _check(lambda z: dis.partial_cross_entropy(torch.softmax(z, 1), Y), logits)
    _check(lambda z: dis.negative_entropy(torch.softmax(z, 1)), logits)


def test_gradients_of_the_consistency_losses():
    logits = _double(6, 3, seed=1) * 3
    t = _double(6, 3, seed=2, simplex=True)
    _check(lambda z: dis.mixed_cross_entropy(z, t), logits)
    _check(lambda z: dis.mixed_mse(z, t), logits)


def test_gradient_of_the_prototype_loss():
    z = F.normalize(_double(6, 4, seed=3) - 0.5, dim=1)
    O = F.normalize(_double(3, 4, seed=4) - 0.5, dim=1)
    ta = _double(6, 3, seed=5, simplex=True)
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    _check(lambda z: dis.prototype_loss(dis.prototype_probs(z, O, 0.3), ta, ta[perm],
                                         0.7, n_labeled=4, lambda_u=0.5), z)


def test_gradient_of_the_contrastive_loss_and_its_denominator():
    """Autograd against finite differences, and against the closed form
    d L / d q_i for the contrast set F = [q; k; queue] (queries appear in
    the denominators of other anchors too)."""
    n, m, tau = 4, 3, 0.5
    labels = torch.tensor([0, 1, 0, 1])
    flags = torch.tensor([1, 1, 0, 1])
    q_lab, q_flag = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1])
    pos, ign = contrastive_masks(labels, flags, q_lab, q_flag)
    keys = F.normalize(_double(n, 5, seed=6) - 0.5, dim=1)
    queue = F.normalize(_double(m, 5, seed=7) - 0.5, dim=1)
    q0 = F.normalize(_double(n, 5, seed=8) - 0.5, dim=1)

    def loss(q):
        return noisy_supcon_loss(q, torch.cat([q, keys, queue]), pos, ign, tau)

    _check(loss, q0)
    # closed form: L = -1/n sum_i [ mean_{p} s_ip - logsumexp_{a kept} s_ia ], s = q.F / tau
    q = q0.clone().requires_grad_(True)
    Fm = torch.cat([q0, keys, queue])
    grad = torch.zeros_like(q0)
    for i in range(n):
        kept = (~ign[i]).double()
        s = Fm @ q0[i] / tau
        soft = kept * torch.exp(s - s.max())
        soft = soft / soft.sum()
        posw = pos[i].double() / pos[i].sum()
        coeff = (soft - posw) / (n * tau)       # d L / d (q_i . F_a)
        grad[i] += coeff @ Fm
        grad[:n] += coeff[:n, None] * q0[i]     # F_a = q_a for the first n columns
    loss(q).backward()
    torch.testing.assert_close(q.grad, grad)

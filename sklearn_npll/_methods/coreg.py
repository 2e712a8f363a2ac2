"""Co-Reg's epochs: warm-up, then each epoch a division per network and the
co-training of each network on its partner's division."""

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from .._estimator import data_parallel
from .._estimator.training import Trainer, mean_terms
from .._nn.networks import per_chunk_batch_norm
from . import label_math as lm
from .division import class_trust_probabilities, trust_probabilities

__all__ = ["CoRegTrainer", "Division", "check_verified"]

#: History columns of a division (NaN during warm-up, when there is none).
DIVISION_COLUMNS = ("n_trusted_a", "n_trusted_b", "noise_rate", "missing_classes_a",
                    "missing_classes_b")


@dataclass
class Division:
    """One network's division of the training set in one epoch.

    Attributes
    ----------
    trust : torch.Tensor of shape (n_samples,)
        Trust probability ``w`` of every sample (0 outside the training rows).
    aligned : torch.Tensor of shape (n_samples, n_classes)
        Distribution-aligned predictions ``q``.
    probs : torch.Tensor of shape (n_training_rows, n_classes)
        The weak-view predictions the division was made from.
    trusted : ndarray
        Training rows in the trusted partial-label split P.
    unlabeled : ndarray
        Training rows in the unlabeled split U.
    n_missing : int
        Classes that are the best candidate of some sample but of no trusted one.
    n_trusted_per_class : list of int
        Trusted samples per class (classes by the best candidate).
    covering_rate : float
        Share of the training rows whose prediction is one of their candidates.
    """

    trust: torch.Tensor
    aligned: torch.Tensor
    probs: torch.Tensor
    trusted: np.ndarray
    unlabeled: np.ndarray
    n_missing: int
    n_trusted_per_class: list
    covering_rate: float


def check_verified(verified, Y):
    """The ``verified`` fit parameter as a boolean numpy mask, or None."""
    if verified is None:
        return None
    mask = np.asarray(verified.cpu() if isinstance(verified, torch.Tensor) else verified)
    n = Y.shape[0]
    if mask.shape != (n,) or mask.dtype.kind not in "bui" \
            or (mask.dtype.kind != "b" and not np.isin(mask, (0, 1)).all()):
        raise ValueError(
            f"verified must be a boolean mask of shape ({n},), one entry per training "
            f"sample; got an array of shape {mask.shape} and dtype {mask.dtype}.")
    mask = mask.astype(bool)
    if not mask.any():
        return None
    sizes = (Y[torch.as_tensor(mask, device=Y.device)] > 0).sum(1).cpu().numpy()
    if (sizes != 1).any():
        bad = np.flatnonzero(mask)[sizes != 1]
        raise ValueError(
            f"verified samples must have a single candidate (their known label); "
            f"{len(bad)} have {sorted(set(sizes[sizes != 1].tolist()))} candidates, e.g. "
            f"sample {bad[0]}.")
    return mask


class CoRegTrainer(Trainer):
    """Co-Reg's training loop for one call of ``fit`` of a ``CoRegClassifier``.

    Attributes
    ----------
    verified : ndarray of bool or None
        The fit's verified samples, checked against the candidate sets.
    divisions : list of Division or None
        The divisions of networks A and B in the last Co-Reg epoch.
    """

    def __init__(self, estimator, ctx):
        super().__init__(estimator, ctx)
        # fail on a bad mask before any training
        self.verified = check_verified(ctx.verified, ctx.Y)
        self.teacher = ctx.soft_targets
        if (estimator.teacher_warmup or estimator.teacher_prior) and self.teacher is None:
            raise ValueError(
                "teacher_warmup and teacher_prior need the teacher's class probabilities: "
                "fit on the output of VLMPartialAnnotator.transform (it carries them), or "
                "pass fit(X, Y, teacher_proba=P).")
        self.divisions = None
        self._warned = set()  # (warning, network) already shown in this fit

    @property
    def networks(self):
        """Networks A and B (both step through the one optimizer)."""
        return [self.estimator.module_, self.estimator.module2_]

    def run_epoch(self, epoch):
        if epoch < self.estimator.warmup_epochs:
            return self.warmup_epoch(epoch)
        return self.coreg_epoch(epoch)

    # ---------------------------------------------------------------- warm-up
    def warmup_epoch(self, epoch):
        """Partial cross-entropy and confidence penalty, each network on its own."""
        est, ctx = self.estimator, self.ctx
        size = 2 * est.batch_size
        self.announce(2 * self.n_batches(len(self.rows), size))

        def loss_terms(logits, rows):
            if est.teacher_warmup:
                # the teacher's preference within each set, instead of any mass on it
                targets = lm.restrict_to_candidates(ctx.Y[rows], self.teacher[rows])
                terms = {"loss_teacher": lm.mixed_cross_entropy(logits, targets)}
                return terms["loss_teacher"], terms
            probs = torch.softmax(logits, dim=1)
            terms = {"loss_pce": lm.partial_cross_entropy(probs, ctx.Y[rows]),
                     "loss_ne": lm.negative_entropy(probs)}
            return terms["loss_pce"] + terms["loss_ne"], terms

        def steps():
            for k, net in enumerate(self.networks):
                for logits, rows, terms in self.train_batches(
                        epoch, net, size, "strong", loss_terms,
                        f" (warm-up, network {'AB'[k]})"):
                    rows, probs = data_parallel.gather(est, rows, torch.softmax(logits, 1))
                    net.memory[rows] = probs.to(net.memory.dtype)
                    yield terms

        terms, n_steps = mean_terms(steps())
        est.history.record("train_batch_count", n_steps)
        # no division during warm-up: the split columns stay empty (NaN)
        return {**terms, **dict.fromkeys(DIVISION_COLUMNS, np.nan)}

    # --------------------------------------------------------------- division
    def prior(self):
        """The class prior of distribution alignment (None: uniform)."""
        est, ctx = self.estimator, self.ctx
        c = est.n_classes_
        if est.class_prior is None:
            return None
        if isinstance(est.class_prior, str):
            Y = ctx.Y[torch.as_tensor(self.rows, device=ctx.device)]
            prior = (Y / Y.sum(1, keepdim=True)).mean(0)
        else:
            prior = torch.as_tensor(np.asarray(est.class_prior, dtype=np.float32),
                                    device=ctx.device)
            if prior.shape != (c,) or bool((prior <= 0).any()):
                raise ValueError(
                    f"class_prior must hold {c} positive values (one per class); got "
                    f"shape {tuple(prior.shape)}.")
        return prior / prior.sum()

    @torch.no_grad()
    def predict_rows(self, net):
        """Softmax of ``net`` on a weak view of every training row (eval mode)."""
        est, ctx = self.estimator, self.ctx
        net.eval()
        local = data_parallel.local_rows(est, self.rows)
        probs = []
        for start in range(0, len(local), 2 * est.batch_size):
            idx = local[start:start + 2 * est.batch_size]
            probs.append(torch.softmax(net(ctx.augment("weak", ctx.batch(idx))), dim=1))
        return data_parallel.gather(est, torch.cat(probs))

    @torch.no_grad()
    def divide(self, epoch, k, net):
        """One weak-view pass over the training set: trust probabilities,
        aligned predictions and the trusted/unlabeled split of network k."""
        est, ctx, rows = self.estimator, self.ctx, self.rows
        probs = self.predict_rows(net)
        rows_t = torch.as_tensor(rows, device=ctx.device)
        # All rows are refreshed before aligning with the memory's mean; the
        # reference aligns batch by batch with a half-refreshed memory.
        net.memory[rows_t] = probs.to(net.memory.dtype)
        q = lm.distribution_alignment(probs, net.memory[rows_t].mean(0), self.prior())
        losses = torch.zeros(len(ctx.data), device=ctx.device)
        # floored at -log(1e-12) = 27.6 (the reference has no floor: inf, then
        # NaN in the mixture); a floored loss sets the top of the min-max scale
        losses[rows_t] = lm.minmax_normalize(lm.division_loss(q, ctx.Y[rows_t]))
        # NaN weights must stop here with the divergence message, not in the mixture
        self.check_finite(epoch, {"division": losses}, f" (division, network {'AB'[k]})")
        averaged = est.coreg_state_.push_losses(k, losses)[rows_t].cpu().numpy()
        # the class each division loss is computed on: the best candidate
        labels = (ctx.Y[rows_t] * q).argmax(1).cpu().numpy()
        w = self.trust(averaged, labels)
        trust = torch.zeros(len(ctx.data), device=ctx.device)
        trust[rows_t] = torch.as_tensor(w, dtype=torch.float32, device=ctx.device)
        aligned = torch.zeros(len(ctx.data), est.n_classes_, device=ctx.device)
        aligned[rows_t] = q
        trusted = w > est.p_threshold
        missing = np.setdiff1d(labels, labels[trusted])
        self.warn_missing_classes(epoch, k, missing)
        covered = ctx.Y[rows_t].gather(1, probs.argmax(1, keepdim=True)) > 0
        return Division(trust=trust, aligned=aligned, probs=probs, trusted=rows[trusted],
                        unlabeled=rows[~trusted], n_missing=len(missing),
                        n_trusted_per_class=np.bincount(labels[trusted],
                                                        minlength=est.n_classes_).tolist(),
                        covering_rate=float(covered.float().mean()))

    def trust(self, losses, labels):
        """Trust probabilities from the mixture(s) on the averaged losses of
        the training rows; verified samples are always trusted."""
        est, rows = self.estimator, self.rows
        free = np.ones(len(rows), bool) if self.verified is None else ~self.verified[rows]
        w = np.ones(len(rows))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            w[free] = trust_probabilities(losses[free], random_state=self.ctx.rng)
            if est.class_aware_division:
                w[free] = np.maximum(w[free], class_trust_probabilities(
                    losses[free], labels[free], random_state=self.ctx.rng))
        return w

    def warn_missing_classes(self, epoch, k, missing):
        """Warn (once per fit call and network) when a class that some
        training samples point to has no trusted sample: the partner then
        learns it only from the unlabeled split, which usually erases it."""
        est = self.estimator
        if len(missing) == 0 or ("missing", k) in self._warned:
            return
        self._warned.add(("missing", k))
        names = ", ".join(str(c) for c in est.classes_[missing])
        hint = "" if est.class_aware_division else (
            " Set class_aware_division=True, train a longer warm-up or a wider network, or "
            "mark a few verified labels of these classes.")
        warnings.warn(  # epochs counted from 1, as in the history
            f"Epoch {epoch + 1}: network {'AB'[k]}'s trusted split holds no sample of "
            f"class(es) {names}, the best candidate of other training samples; its partner "
            f"will not learn them from labels.{hint} Shown once per fit; the history's "
            "missing_classes_a/b count them every epoch.",
            RuntimeWarning)

    def warn_skipped(self, epoch, a, n_trusted):
        """Warn (once per fit call and network) that network ``a`` skips its
        co-training for want of trusted samples."""
        if ("skipped", a) in self._warned:
            return
        self._warned.add(("skipped", a))
        warnings.warn(
            f"Epoch {epoch + 1}: network {'AB'[a]}'s partner trusts {n_trusted} sample(s); "
            f"network {'AB'[a]} skips its co-training this epoch. Shown once per fit; the "
            f"history's n_trusted_{'ba'[a]} counts the trusted samples every epoch.",
            RuntimeWarning)

    # ------------------------------------------------------------ co-training
    def coreg_epoch(self, epoch):
        """Divide with both networks, then train A on B's division and B on A's."""
        est = self.estimator
        if self.key_branch(epoch):
            for net in self.networks:
                net.sync_key()
        divisions = [self.divide(epoch, k, net) for k, net in enumerate(self.networks)]
        self.divisions = divisions
        # the latest division is a fitted attribute already during training,
        # for callbacks (e.g. the trusted split's quality against true labels)
        est.trust_ = torch.stack([d.trust for d in divisions]).cpu().numpy()
        # each network runs len(P) // B + 1 steps over its partner's trusted split P
        self.announce(sum(len(d.trusted) // est.batch_size + 1
                          for d in divisions if len(d.trusted) >= 2))

        def steps():
            for a in (0, 1):
                yield from self.train_network(epoch, a)

        result, n_steps = mean_terms(steps())
        est.history.record("train_batch_count", n_steps)
        n = len(self.rows)
        a, b = divisions
        result.update(n_trusted_a=len(a.trusted), n_trusted_b=len(b.trusted),
                      missing_classes_a=a.n_missing, missing_classes_b=b.n_missing,
                      noise_rate=1.0 - (len(a.trusted) + len(b.trusted)) / (2 * n),
                      n_trusted_per_class_a=a.n_trusted_per_class,
                      n_trusted_per_class_b=b.n_trusted_per_class,
                      covering_rate_a=a.covering_rate, covering_rate_b=b.covering_rate)
        return result

    def key_branch(self, epoch):
        """Whether the key encoder and queue run this epoch.

        The reference runs the key encoder, queue and (train-mode) query pass
        in every epoch after warm-up, even while their loss weight is zero.
        Skipping them changes no parameter update, only the batch-norm
        running statistics, hence eval-mode predictions slightly.
        """
        est = self.estimator
        return est.use_contrastive and epoch >= est.warmup_epochs + est.start_contrastive

    def train_network(self, epoch, a):
        """One pass of network ``a`` over its partner's trusted split; yields
        the terms of each step."""
        est, ctx = self.estimator, self.ctx
        net, partner = self.networks[a], self.networks[1 - a]
        division = self.divisions[1 - a]
        P, U = division.trusted, division.unlabeled
        if len(P) < 2:
            self.warn_skipped(epoch, a, len(P))
            return
        use_u = est.use_unlabeled and len(U) > 1
        # |P| // B + 1 as in the paper; the reference's ceil(|P| / B) is one
        # fewer when B divides |P|.
        num_iter = len(P) // est.batch_size + 1
        labeled = self.cycle(P, est.batch_size)
        unlabeled = self.cycle(U, est.batch_size) if use_u else None
        source = division if est.use_co_pseudo_labels else self.divisions[a]
        net.train()
        partner.eval()
        for it in range(num_iter):
            batch = self.views(next(labeled), unlabeled)
            targets = self.pseudo_labels(net, partner, batch, division, source.aligned)
            loss, terms = self.losses(epoch, it, num_iter, net, batch, targets)
            values = data_parallel.average(est, {k: float(v.detach()) for k, v in terms.items()})
            self.check_finite(epoch, {**values, "train_loss": float(loss.detach())},
                              f" (network {'AB'[a]})")
            self.step(net, loss, (batch.x, ctx.Y[batch.rows]), targets.logits_w[:batch.nx],
                      batch.rows)
            yield values

    def views(self, ix, unlabeled):
        """A labeled batch (and an unlabeled one) with two weak and two strong
        views of each."""
        ctx = self.ctx
        rows = torch.as_tensor(ix, device=ctx.device)
        x = ctx.batch(ix)
        weak = [ctx.augment("weak", x), ctx.augment("weak", x)]
        strong = [ctx.augment("strong", x), ctx.augment("strong", x)]
        rows_u = None
        if unlabeled is not None:
            iu = next(unlabeled)
            rows_u = torch.as_tensor(iu, device=ctx.device)
            u = ctx.batch(iu)
            weak += [ctx.augment("weak", u), ctx.augment("weak", u)]
            strong += [ctx.augment("strong", u), ctx.augment("strong", u)]
        return _Batch(rows=rows, x=x, nx=len(ix), weak=weak, strong=strong, rows_u=rows_u)

    @torch.no_grad()
    def pseudo_labels(self, net, partner, batch, division, aligned):
        """Sharpened co-pseudo-labels of the labeled rows and averaged targets
        of the unlabeled rows, from the weak views."""
        est, ctx = self.estimator, self.ctx
        T = est.sharpen_temperature
        sizes = [len(view) for view in batch.weak]
        # The weak views of this network's four passes in one forward; batch
        # norm still sees each view on its own (train mode).
        with per_chunk_batch_norm(net, sizes):
            logits_w, z_w = net(torch.cat(batch.weak), return_features=True)
        probs_w = torch.softmax(logits_w, 1).split(sizes)
        p_mean = (probs_w[0] + probs_w[1]) / 2
        rows = batch.rows
        r = aligned[rows] if not est.teacher_prior else lm.apply_prior(
            aligned[rows], self.teacher[rows], est.teacher_prior)
        tx = lm.sharpen(lm.co_pseudo_labels(ctx.Y[rows], r, p_mean, division.trust[rows]), T)
        tu = None
        if batch.has_unlabeled:
            # The partner is in eval mode: one pass over both views gives
            # exactly what two passes would.
            pb1, pb2 = torch.softmax(partner(torch.cat(batch.weak[2:])), 1).split(sizes[2:])
            tu = lm.unlabeled_targets(probs_w[2], probs_w[3], pb1, pb2)
            if est.teacher_prior:
                tu = lm.apply_prior(tu, self.teacher[batch.rows_u], est.teacher_prior)
            tu = lm.sharpen(tu, T)
        return _Targets(logits_w=logits_w, z_w1=z_w[:batch.nx], tx=tx, tu=tu)

    def losses(self, epoch, it, num_iter, net, batch, targets):
        """The step's loss and its terms: MixUp consistency, prototypes and
        the noisy supervised contrastive loss."""
        est, ctx = self.estimator, self.ctx
        nx, tx, tu = batch.nx, targets.tx, targets.tu
        inputs = torch.cat([batch.strong[0], batch.strong[1]]
                           + ([batch.strong[2], batch.strong[3]] if tu is not None else []))
        all_targets = torch.cat([tx, tx] + ([tu, tu] if tu is not None else []))
        lam = lm.sample_mixup_lambda(est.mixup_alpha, ctx.rng)
        perm = torch.randperm(len(inputs), generator=ctx.generator).to(ctx.device)
        mixed_x, mixed_t = lm.mixup(inputs, all_targets, lam, perm)
        logits, z_mixed = net(mixed_x, return_features=True)
        terms = {"loss_x": lm.mixed_cross_entropy(logits[:2 * nx], mixed_t[:2 * nx])}
        loss = terms["loss_x"]
        if tu is not None:
            terms["loss_u"] = lm.mixed_mse(logits[2 * nx:], mixed_t[2 * nx:])
            ramp = lm.rampup(epoch, it, num_iter, est.warmup_epochs, est.rampup_length)
            loss = loss + est.lambda_u * ramp * terms["loss_u"]
        contrast_on = epoch > est.warmup_epochs + est.start_contrastive
        if est.use_prototypes:
            state = est.coreg_state_
            state.prototypes.copy_(lm.update_prototypes(
                state.prototypes, *data_parallel.gather(est, targets.z_w1, tx.argmax(1)),
                est.prototype_momentum))
            if contrast_on:
                s = lm.prototype_probs(z_mixed, state.prototypes, est.prototype_temperature)
                terms["loss_prototype"] = lm.prototype_loss(
                    s, all_targets, all_targets[perm], lam, 2 * nx, est.lambda_u)
                loss = loss + est.lambda_prototype * terms["loss_prototype"]
        if self.key_branch(epoch):
            loss = self.contrastive(net, batch, targets, contrast_on, terms, loss)
        return loss, terms

    def contrastive(self, net, batch, targets, contrast_on, terms, loss):
        """Momentum update, keys, the contrastive term (once switched on) and
        the queue update; returns the loss with the term added."""
        est, ctx = self.estimator, self.ctx
        net.momentum_update(est.key_momentum)
        has_u = targets.tu is not None
        anchor_t = torch.cat([targets.tx, targets.tu]) if has_u else targets.tx
        flags = torch.zeros(len(anchor_t), dtype=torch.bool, device=ctx.device)
        flags[:batch.nx] = True
        s1, s2 = batch.strong[0], batch.strong[1]
        keys = net.key_features(torch.cat([s2, batch.strong[3]]) if has_u else s2)
        if contrast_on:
            _, queries = net(torch.cat([s1, batch.strong[2]]) if has_u else s1,
                             return_features=True)
            queue_z, queue_t, queue_flags = net.queue()
            # the loss of the positive and ignore masks of co-reg.md, computed
            # from labels and flags without building the masks
            terms["loss_contrastive"] = lm.supcon_loss_from_labels(
                queries, keys, queue_z, anchor_t.argmax(1), flags, queue_t.argmax(1),
                queue_flags, est.contrastive_temperature)
            loss = loss + est.lambda_contrastive * terms["loss_contrastive"]
        net.enqueue(*data_parallel.gather(est, keys, anchor_t, flags))
        return loss


@dataclass
class _Batch:
    """The rows of one co-training step and their augmented views (the
    unlabeled batch's views, if any, after the labeled batch's)."""

    rows: torch.Tensor
    x: torch.Tensor
    nx: int
    weak: list
    strong: list
    rows_u: torch.Tensor = None

    @property
    def has_unlabeled(self):
        return len(self.weak) == 4


@dataclass
class _Targets:
    """The no-gradient outputs of a step: the weak views' logits, the first
    weak view's features and the sharpened targets."""

    logits_w: torch.Tensor
    z_w1: torch.Tensor
    tx: torch.Tensor
    tu: torch.Tensor = None

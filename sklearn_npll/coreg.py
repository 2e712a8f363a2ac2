"""CoRegClassifier: Co-Reg (Wang et al., AAAI 2025) as a scikit-learn
classifier on skorch."""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions

from . import _disambiguation as dis
from . import _distributed
from ._base import PartialLabelNet
from ._division import class_trust_probabilities, trust_probabilities
from ._nets import CoRegNetwork, CoRegState, per_chunk_batch_norm

__all__ = ["CoRegClassifier"]


class CoRegClassifier(PartialLabelNet):
    """Co-Reg: learn a classifier from noisy partial labels.

    Two networks of the same architecture purify each other's labels. Each
    epoch after warm-up, each network splits the training set with a
    Gaussian mixture on its per-sample losses into a trusted partial-label
    split and an unlabeled split; each network then trains on its partner's
    split with co-pseudo-labels, MixUp, prototypes in label space and a noisy
    supervised contrastive loss in feature space. Prediction sums both
    networks' logits. Built on skorch's ``NeuralNet``: callbacks, ``history``,
    checkpoints and ``module__*`` parameters work as in skorch.

    Parameters
    ----------
    module : None, nn.Module class or instance, default=None
        The encoder (backbone) of both networks, returning ``(batch, d)``
        features. None chooses one from the input: an MLP for feature
        vectors, a small CNN for images under 32 px, PreAct ResNet-18 from
        32 px. Its constructor arguments are set with ``module__<name>``.
    max_epochs : int, default=100
        Number of epochs (the reference uses 800 on CIFAR, 100 elsewhere).
    warmup_epochs : int, default=50
        Epochs of partial cross-entropy warm-up, each network on its own.
    batch_size : int, default=256
        Labeled (and unlabeled) batch size B; warm-up batches hold 2B.
    lr : float, default=0.01
        Initial SGD learning rate of each network.
    momentum : float, default=0.9
        SGD momentum.
    weight_decay : float, default=5e-4
        SGD weight decay.
    optimizer : torch optimizer class, default=torch.optim.SGD
        One instance per network; extra arguments with ``optimizer__<name>``.
    cosine_epochs : int or None, default=None
        Period E_cos of the cosine schedule; None uses ``max_epochs`` (the
        reference hard-codes 800).
    sharpen_temperature : float, default=0.5
        Temperature T of pseudo-label sharpening.
    mixup_alpha : float, default=4.0
        MixUp weight lambda ~ Beta(alpha, alpha), then max(lambda, 1 - lambda).
    lambda_u : float, default=1.0
        Weight of the unlabeled consistency term (and of the unlabeled rows
        of the prototype loss).
    rampup_length : int, default=16
        Epochs over which the unlabeled term ramps up after warm-up.
    p_threshold : float, default=0.5
        Trust probability above which a sample joins the trusted split.
    loss_history : int, default=5
        Number of epochs of division losses averaged before the mixture fit.
    class_aware_division : bool, default=False
        Also fit one mixture per class (samples grouped by the best candidate
        of their aligned prediction) and trust a sample when either the
        global or its class's mixture trusts it. Guards against the collapse
        of a weak warm-up, where the global mixture trusts only the classes
        already learned and the others vanish from the trusted split.
    class_prior : None, "candidates" or array-like of shape (n_classes,), default=None
        Prior pi of distribution alignment: uniform (None), estimated from
        the candidate sets ("candidates": each sample spreads unit mass over
        its set), or given.
    proj_dim : int, default=128
        Width of the projection head's output.
    queue_size : int, default=8192
        Capacity of each network's key queue.
    key_momentum : float, default=0.999
        EMA factor m of the momentum encoder.
    prototype_momentum : float, default=0.999
        EMA factor gamma of the prototypes.
    prototype_temperature : float, default=0.3
        Temperature of the prototype softmax.
    contrastive_temperature : float, default=0.07
        Temperature tau of the contrastive loss.
    start_contrastive : int, default=10
        The prototype and contrastive terms switch on after epoch
        ``warmup_epochs + start_contrastive``.
    lambda_prototype : float, default=0.1
        Weight of the prototype loss.
    lambda_contrastive : float, default=0.1
        Weight of the contrastive loss.
    use_co_pseudo_labels : bool, default=True
        Ablation switch: False restricts a network's own aligned prediction
        to the candidates instead of its partner's.
    use_prototypes : bool, default=True
        Ablation switch for the prototype term.
    use_contrastive : bool, default=True
        Ablation switch for the contrastive term (and its key encoder and
        queue work).
    use_unlabeled : bool, default=True
        Ablation switch: False discards the unlabeled split instead of
        training on it without labels.
    flip : bool, default=True
        Random horizontal flips in the augmentations (turn off for digits,
        signs and text).
    padding : int or None, default=None
        Padding of the random crop; None: 4 px at 32 px, scaled with size.
    weak_augment, strong_augment : callable or None, default=None
        Your own per-sample transforms (e.g. ``torchvision.transforms.v2``)
        on one ``(C, H, W)`` tensor in [0, 1] (uint8 input is converted), in
        place of the built-in weak and strong augmentations.
    image_size : "auto", None, int or (height, width), default="auto"
        Training size of image inputs. "auto" keeps images of one size as
        they are and resizes mixed sizes to a square whose side is the
        median shorter side, capped at 128 px (printed at ``verbose >= 1``);
        an int (square) or a pair resizes every image: antialiased scaling
        that keeps the aspect ratio until the image covers the target, then
        a centre crop. None requires images of one size. The size used is
        ``image_size_`` and is applied at prediction. Colour modes are
        unified: grey (1 channel) if every image is grey, otherwise RGB
        (alpha dropped, palettes expanded).
    memory_budget : int or None, default=2**31
        File paths, PIL images and datasets are decoded and resized once per
        fit into a uint8 store (float32 for float datasets); a store larger
        than this many bytes (2 GiB by default) is a memory-mapped temporary
        file instead of memory. None keeps it in memory.
    num_workers : int or None, default=None
        Processes decoding images into the store (a torch ``DataLoader``'s
        ``num_workers``; large JPEGs decode at reduced scale). None: one per
        core, up to 8, for 256 images or more, otherwise none; -1: one per
        core; 0: the main process.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Arithmetic of the forward passes (``torch.autocast``). "auto" is
        "fp32" on the CPU (results bit-identical to "fp32") and, on CUDA,
        "bf16" where the GPU supports it, else "fp16". "fp16" scales the loss
        with a ``GradScaler``. On CUDA, convolutional networks also run in
        ``channels_last`` memory format.
    device_store : "auto" or bool, default="auto"
        On CUDA, copy the whole training store to the GPU once ("auto": when
        it takes at most half of the GPU's free memory); otherwise each batch
        is gathered into pinned memory and copied without blocking.
    predict_networks : {"both", "first"}, default="both"
        "first" predicts with network A alone, for half the inference cost.
    validation_fraction : float or None, default=None
        Hold out this fraction of the training samples and record the
        covering rate of predictions on them as ``valid_covering_rate`` each
        epoch (for skorch's ``EarlyStopping`` and ``Checkpoint``), with
        ``valid_covering_rate_best`` and ``valid_loss`` (the mean negative
        log of the probability on the candidate set).
    callbacks : list of (name, skorch callback) or None, default=None
        Extra skorch callbacks (``Checkpoint``, ``EarlyStopping``,
        ``EpochScoring``, ``GradientNormClipping``, ...). Training batches
        reach them as ``batch=(inputs before augmentation, candidate rows)``
        with the network's logits as ``y_pred`` (Co-Reg: on the batch's first
        weak view, or its strong view in warm-up); validation batches
        (``validation_fraction``) with the mean logits of prediction.
        ``on_grad_computed`` carries the parameters of the network that
        stepped. Scoring callbacks score against candidate sets: use
        ``scoring=None`` (the covering rate) or
        :func:`~sklearn_npll.metrics.covering_rate_scorer`; a string scorer
        is refused at fit. An ``LRScheduler`` replaces the built-in cosine
        schedule (:class:`~sklearn_npll.callbacks.CosineLR`).
    verbose : int, default=0
        1 prints a line per epoch, 2 adds a progress bar.
    device : str, default="auto"
        "auto" uses CUDA when available.
    random_state : int, RandomState instance or None, default=None
        Seeds every random draw of a fit: initialisation, data order,
        augmentation, MixUp and the mixtures.
    warm_start : bool, default=False
        ``fit`` continues from the current state (e.g. after a skorch
        ``LoadInitState``) up to ``max_epochs`` epochs in total, on the
        learning-rate schedule where it stopped, instead of re-initialising.
        ``partial_fit`` trains one more epoch per call.
    keep_training_state : bool, default=False
        Whether pickles (and ``copy.copy``) of the fitted estimator keep the
        state that only training needs (momentum encoders, projection heads,
        key queues, prediction memories, prototypes and division loss
        histories, the optimizer's buffers) so that
        ``partial_fit`` or ``fit`` with ``warm_start=True`` can continue after
        loading. By default a pickle holds what ``predict`` uses: the
        networks' encoders and classifier heads, the normalisation, classes
        and fitted attributes. ``copy.deepcopy`` always keeps everything;
        :meth:`trim_for_prediction` drops the training state in place.
    **kwargs
        ``module__*``, ``optimizer__*`` and ``callbacks__*`` parameters.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (names when known).
    n_classes_ : int
    image_size_ : tuple (height, width) or None
        Size of the images the networks were trained on (None for feature
        vectors).
    module_, module2_ : CoRegNetwork
        Networks A and B (encoder, heads, momentum copy, queue, memory).
    coreg_state_ : CoRegState
        Shared prototypes and division loss histories.
    history_ : skorch History
        Per epoch: ``loss_pce``, ``loss_ne`` (warm-up), ``loss_x``,
        ``loss_u``, ``loss_prototype``, ``loss_contrastive``, ``train_loss``,
        ``n_trusted_a``, ``n_trusted_b``, ``noise_rate`` (estimated fraction
        outside the trusted splits), ``missing_classes_a``, ``missing_classes_b``
        (classes that are the best candidate of some samples but of no trusted
        one; a warning names them; the split columns are NaN during warm-up),
        ``trusted_per_class_a``, ``trusted_per_class_b`` (lists: trusted
        samples per class, classes by the best candidate as in the division),
        ``covering_rate_a``, ``covering_rate_b`` (share of the training
        samples whose division prediction, on a weak view, is a candidate;
        these four are absent in warm-up epochs), ``lr``, ``dur`` (seconds).
        The per-epoch line printed with ``verbose=1`` leaves out the per-term
        losses and these four.
    trust_ : ndarray of shape (2, n_samples) or None
        Trust probability of every training sample from the last division
        (row 0: network A, row 1: network B); None before any division.
    label_distribution_ : ndarray of shape (n_samples, n_classes)
        Disambiguated label distribution of every training sample.
    n_features_in_ : int
        Only for feature-vector inputs.

    Notes
    -----
    Where this implementation departs from the authors' reference code (each
    is also commented where it is done):

    - Epochs: the reference runs ``max_epochs + 1`` epochs; this runs exactly
      ``max_epochs``.
    - Distribution alignment in the division: the whole prediction memory is
      refreshed first, then every sample is aligned with the mean of the
      refreshed memory. The reference refreshes it batch by batch and aligns
      each batch with the mean of a half-refreshed memory.
    - Division loss: ``-log(max(best candidate probability, 1e-12))``; the
      reference has no floor (an underflow gives inf, then NaN in the
      mixture). A floored sample's loss, 27.6, sets the top of the min-max
      scale of that epoch.
    - Contrastive branch: the key encoder and queue run from epoch
      ``warmup_epochs + start_contrastive`` on and the query pass only while
      the contrastive term is on; the reference runs all three in every
      epoch after warm-up. No parameter update differs, but the skipped
      train-mode passes do not update the batch-norm running statistics, so
      eval-mode predictions (division, test) differ slightly.
    - Iterations per epoch: ``|P| // batch_size + 1`` as the paper's text
      says; the reference's ``ceil(|P| / batch_size)`` is one fewer when
      ``batch_size`` divides ``|P|``.
    - The queue starts empty (the reference fills it with random entries),
      the mixture is seeded from ``random_state``, and the cosine period is
      ``max_epochs`` unless ``cosine_epochs`` is set (the reference: 800).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll import CoRegClassifier, make_partial_labels
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.normal(-2, 1, (60, 4)), rng.normal(2, 1, (60, 4))].astype("float32")
    >>> y = np.r_[np.zeros(60, int), np.ones(60, int)]
    >>> Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.1, random_state=0)
    >>> clf = CoRegClassifier(max_epochs=4, warmup_epochs=2, batch_size=32,
    ...                       random_state=0).fit(X, Y)
    >>> clf.predict(X[:3]).shape
    (3,)
    """

    def __init__(
        self,
        module=None,
        *,
        max_epochs=100,
        warmup_epochs=50,
        batch_size=256,
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        optimizer=torch.optim.SGD,
        cosine_epochs=None,
        sharpen_temperature=0.5,
        mixup_alpha=4.0,
        lambda_u=1.0,
        rampup_length=16,
        p_threshold=0.5,
        loss_history=5,
        class_aware_division=False,
        class_prior=None,
        proj_dim=128,
        queue_size=8192,
        key_momentum=0.999,
        prototype_momentum=0.999,
        prototype_temperature=0.3,
        contrastive_temperature=0.07,
        start_contrastive=10,
        lambda_prototype=0.1,
        lambda_contrastive=0.1,
        use_co_pseudo_labels=True,
        use_prototypes=True,
        use_contrastive=True,
        use_unlabeled=True,
        flip=True,
        padding=None,
        weak_augment=None,
        strong_augment=None,
        image_size="auto",
        memory_budget=2**31,
        num_workers=None,
        precision="auto",
        device_store="auto",
        predict_networks="both",
        validation_fraction=None,
        callbacks=None,
        verbose=0,
        device="auto",
        random_state=None,
        warm_start=False,
        keep_training_state=False,
        **kwargs,
    ):
        self.module = module
        self.max_epochs = max_epochs
        self.warmup_epochs = warmup_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.cosine_epochs = cosine_epochs
        self.sharpen_temperature = sharpen_temperature
        self.mixup_alpha = mixup_alpha
        self.lambda_u = lambda_u
        self.rampup_length = rampup_length
        self.p_threshold = p_threshold
        self.loss_history = loss_history
        self.class_aware_division = class_aware_division
        self.class_prior = class_prior
        self.proj_dim = proj_dim
        self.queue_size = queue_size
        self.key_momentum = key_momentum
        self.prototype_momentum = prototype_momentum
        self.prototype_temperature = prototype_temperature
        self.contrastive_temperature = contrastive_temperature
        self.start_contrastive = start_contrastive
        self.lambda_prototype = lambda_prototype
        self.lambda_contrastive = lambda_contrastive
        self.use_co_pseudo_labels = use_co_pseudo_labels
        self.use_prototypes = use_prototypes
        self.use_contrastive = use_contrastive
        self.use_unlabeled = use_unlabeled
        self.flip = flip
        self.padding = padding
        self.weak_augment = weak_augment
        self.strong_augment = strong_augment
        self.image_size = image_size
        self.memory_budget = memory_budget
        self.num_workers = num_workers
        self.precision = precision
        self.device_store = device_store
        self.predict_networks = predict_networks
        self.validation_fraction = validation_fraction
        self.callbacks = callbacks
        self.verbose = verbose
        self.device = device
        self.random_state = random_state
        self.warm_start = warm_start
        self.keep_training_state = keep_training_state
        self._finish_init(kwargs)

    _parameter_constraints = {
        **PartialLabelNet._parameter_constraints,
        "warmup_epochs": [Interval(Integral, 0, None, closed="left")],
        "sharpen_temperature": [Interval(Real, 0, None, closed="neither")],
        "mixup_alpha": [Interval(Real, 0, None, closed="neither")],
        "lambda_u": [Interval(Real, 0, None, closed="left")],
        "rampup_length": [Interval(Integral, 0, None, closed="left")],
        "p_threshold": [Interval(Real, 0, 1, closed="both")],
        "loss_history": [Interval(Integral, 1, None, closed="left")],
        "class_aware_division": ["boolean"],
        "class_prior": [None, StrOptions({"candidates"}), "array-like"],
        "proj_dim": [Interval(Integral, 1, None, closed="left")],
        "queue_size": [Interval(Integral, 1, None, closed="left")],
        "key_momentum": [Interval(Real, 0, 1, closed="both")],
        "prototype_momentum": [Interval(Real, 0, 1, closed="both")],
        "prototype_temperature": [Interval(Real, 0, None, closed="neither")],
        "contrastive_temperature": [Interval(Real, 0, None, closed="neither")],
        "start_contrastive": [Interval(Integral, 0, None, closed="left")],
        "lambda_prototype": [Interval(Real, 0, None, closed="left")],
        "lambda_contrastive": [Interval(Real, 0, None, closed="left")],
        "use_co_pseudo_labels": ["boolean"],
        "use_prototypes": ["boolean"],
        "use_contrastive": ["boolean"],
        "use_unlabeled": ["boolean"],
        "predict_networks": [StrOptions({"both", "first"})],
    }

    # trains data-parallel under torchrun (see sklearn_npll._distributed)
    _data_parallel = True

    _log_keys_ignored = ("loss_pce", "loss_ne", "loss_x", "loss_u", "loss_prototype",
                         "loss_contrastive", "trusted_per_class_a", "trusted_per_class_b",
                         "covering_rate_a", "covering_rate_b")

    def _prepare_fit(self, X, y):
        prepared = super()._prepare_fit(X, y)
        if self.max_epochs <= self.warmup_epochs:
            warnings.warn(
                f"max_epochs={self.max_epochs} <= warmup_epochs={self.warmup_epochs}: this "
                "fit runs only the warm-up (partial cross-entropy, each network on its "
                "own) and no Co-Reg epoch, so trust_ stays None. Raise max_epochs or lower "
                "warmup_epochs.", UserWarning)
        return prepared

    def fit(self, X, y=None, verified=None):
        """Fit both networks from candidate sets, optionally with verified labels.

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Training inputs, as in :class:`PartialLabelNet`'s ``fit``: images,
            a feature matrix, or the annotator's output.
        y : array-like of shape (n, C) or (n,), list of sets, or None
            Candidate matrix (0/1), labels (singleton sets) or sets of class
            names; None when ``X`` carries the candidates.
        verified : array-like of bool of shape (n,), default=None
            Marks the samples whose label is known (checked by a person).
            Their candidate set in ``y`` must hold exactly that one class.
            Every division trusts them in both networks (trust 1, so they are
            never sent to the unlabeled split, and their co-pseudo-label is
            their label); the Gaussian mixture is fitted on the other samples
            only. Applies to this call only (``partial_fit`` trains without).

        Returns
        -------
        self : CoRegClassifier
            The fitted estimator.
        """
        self._verified_arg = verified
        try:
            return super().fit(X, y)
        finally:
            self.__dict__.pop("_verified_arg", None)

    def _verified(self, ctx):
        """Boolean mask of the verified training samples (None if none),
        checked against the candidate sets once per fit call."""
        if "verified" not in ctx.extra:
            ctx.extra["verified"] = _check_verified(
                self.__dict__.get("_verified_arg"), ctx.Y)
        return ctx.extra["verified"]

    # ----------------------------------------------------------- networks
    def build_networks(self, encoder_factory):
        n, c = self.n_train_samples_, self.n_classes_

        def network():
            return CoRegNetwork(encoder_factory(), c, self.sample_shape_, n,
                                proj_dim=self.proj_dim, queue_size=self.queue_size)

        return {"module": network(), "module2": network(),
                "coreg_state": CoRegState(c, n, self.proj_dim, self.loss_history)}

    def inference_networks(self):
        if self.predict_networks == "first":
            return [self.module_]
        if self.predict_networks == "both":
            return [self.module_, self.module2_]
        raise ValueError(
            f"predict_networks must be 'both' or 'first'; got {self.predict_networks!r}.")

    def _networks(self):
        # both step through the one optimizer, a parameter group each
        return [self.module_, self.module2_]

    # ------------------------------------------------------------- epochs
    def run_epoch(self, epoch, ctx):
        self._verified(ctx)  # fail on a bad mask before any training
        if epoch < self.warmup_epochs:
            return self._warmup_epoch(epoch, ctx)
        return self._coreg_epoch(epoch, ctx)

    def _warmup_epoch(self, epoch, ctx):
        sums = {"loss_pce": 0.0, "loss_ne": 0.0}
        steps = 0
        n_rows = len(self.training_rows(ctx))
        self.announce_batches(2 * self.n_batches(n_rows, 2 * self.batch_size), ctx)
        for k, net in enumerate(self._networks()):
            net.train()
            for idx in self.shuffled_batches(self.training_rows(ctx), 2 * self.batch_size, ctx):
                rows = torch.as_tensor(idx, device=ctx.device)
                x = ctx.batch(idx)
                logits = net(ctx.augment("strong", x))
                probs = torch.softmax(logits, dim=1)
                terms = {"loss_pce": dis.partial_cross_entropy(probs, ctx.Y[rows]),
                         "loss_ne": dis.negative_entropy(probs)}
                loss = terms["loss_pce"] + terms["loss_ne"]
                terms = _distributed.average(self, terms)
                self.check_finite(epoch, terms, f" (warm-up, network {'AB'[k]})")
                self.step_network(net, loss, (x, ctx.Y[rows]), logits)
                rows, probs = _distributed.gather(self, rows, probs.detach())
                net.memory[rows] = probs.to(net.memory.dtype)
                for name, value in terms.items():
                    sums[name] += float(value)
                steps += 1
        self.history.record("train_batch_count", steps)
        terms = {name: total / max(steps, 1) for name, total in sums.items()}
        # no division during warm-up: the split columns stay empty (NaN)
        return {**terms, "n_trusted_a": np.nan, "n_trusted_b": np.nan, "noise_rate": np.nan,
                "missing_classes_a": np.nan, "missing_classes_b": np.nan}

    def _prior(self, ctx):
        c = self.n_classes_
        if self.class_prior is None:
            return None
        if isinstance(self.class_prior, str):
            if self.class_prior != "candidates":
                raise ValueError(
                    f"class_prior must be None, 'candidates' or an array of {c} "
                    f"probabilities; got {self.class_prior!r}.")
            Y = ctx.Y[torch.as_tensor(self.training_rows(ctx), device=ctx.device)]
            prior = (Y / Y.sum(1, keepdim=True)).mean(0)
        else:
            prior = torch.as_tensor(np.asarray(self.class_prior, dtype=np.float32),
                                    device=ctx.device)
            if prior.shape != (c,) or bool((prior <= 0).any()):
                raise ValueError(
                    f"class_prior must hold {c} positive values (one per class); got "
                    f"shape {tuple(prior.shape)}.")
        return prior / prior.sum()

    @torch.no_grad()
    def _divide(self, epoch, k, net, ctx):
        """One weak-view pass over the training set: trust probabilities,
        aligned predictions and the trusted/unlabeled split of network k."""
        net.eval()
        rows = self.training_rows(ctx)
        local = _distributed.local_rows(self, rows)
        probs = []
        for start in range(0, len(local), 2 * self.batch_size):
            idx = local[start:start + 2 * self.batch_size]
            probs.append(torch.softmax(net(ctx.augment("weak", ctx.batch(idx))), dim=1))
        probs = _distributed.gather(self, torch.cat(probs))
        rows_t = torch.as_tensor(rows, device=ctx.device)
        # All rows are refreshed before aligning with the memory's mean; the
        # reference aligns batch by batch with a half-refreshed memory.
        net.memory[rows_t] = probs.to(net.memory.dtype)
        q = dis.distribution_alignment(probs, net.memory[rows_t].mean(0), self._prior(ctx))
        losses = torch.zeros(len(ctx.data), device=ctx.device)
        # floored at -log(1e-12) = 27.6 (the reference has no floor: inf, then
        # NaN in the mixture); a floored loss sets the top of the min-max scale
        losses[rows_t] = dis.minmax_normalize(dis.division_loss(q, ctx.Y[rows_t]))
        # NaN weights must stop here with the divergence message, not in the mixture
        self.check_finite(epoch, {"division": losses}, f" (division, network {'AB'[k]})")
        averaged = self.coreg_state_.push_losses(k, losses)[rows_t]
        averaged = averaged.cpu().numpy()
        verified = self._verified(ctx)
        free = np.ones(len(rows), bool) if verified is None else ~verified[rows]
        w = np.ones(len(rows))  # verified samples are always trusted
        # the class each division loss is computed on: the best candidate
        labels = (ctx.Y[rows_t] * q).argmax(1).cpu().numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            w[free] = trust_probabilities(averaged[free], random_state=ctx.rng)
            if self.class_aware_division:
                w[free] = np.maximum(w[free], class_trust_probabilities(
                    averaged[free], labels[free], random_state=ctx.rng))
        trust = torch.zeros(len(ctx.data), device=ctx.device)
        trust[rows_t] = torch.as_tensor(w, dtype=torch.float32, device=ctx.device)
        aligned = torch.zeros(len(ctx.data), self.n_classes_, device=ctx.device)
        aligned[rows_t] = q
        trusted = w > self.p_threshold
        missing = np.setdiff1d(labels, labels[trusted])
        self._warn_missing_classes(epoch, k, missing, ctx)
        # for the history: the trusted split per class and the covering rate of
        # this pass's predictions (no extra forward pass)
        per_class = np.bincount(labels[trusted], minlength=self.n_classes_).tolist()
        covered = ctx.Y[rows_t].gather(1, probs.argmax(1, keepdim=True)) > 0
        return {"w": trust, "q": aligned, "probs": probs,
                "P": rows[trusted], "U": rows[~trusted], "n_missing": len(missing),
                "trusted_per_class": per_class, "covering_rate": float(covered.float().mean())}

    def _warn_missing_classes(self, epoch, k, missing, ctx):
        """Warn (once per fit call and network) when a class that some
        training samples point to has no trusted sample: the partner then
        learns it only from the unlabeled split, which usually erases it."""
        if len(missing) == 0 or ctx.extra.get(f"warned_missing_{k}"):
            return
        ctx.extra[f"warned_missing_{k}"] = True
        names = ", ".join(str(c) for c in self.classes_[missing])
        hint = "" if self.class_aware_division else (
            " Set class_aware_division=True, train a longer warm-up or a wider network, or "
            "mark a few verified labels of these classes.")
        warnings.warn(
            f"Epoch {epoch}: network {'AB'[k]}'s trusted split holds no sample of "
            f"class(es) {names}, the best candidate of other training samples; its partner "
            f"will not learn them from labels.{hint} Shown once per fit; the history's "
            "missing_classes_a/b count them every epoch.",
            RuntimeWarning)

    def _coreg_epoch(self, epoch, ctx):
        key_branch = self.use_contrastive and epoch >= self.warmup_epochs + self.start_contrastive
        if key_branch:
            for net in self._networks():
                net.sync_key()
        divisions = [self._divide(epoch, k, net, ctx) for k, net in enumerate(self._networks())]
        ctx.extra["divisions"] = divisions
        # each network runs len(P) // B + 1 steps over its partner's trusted split P
        self.announce_batches(sum(len(d["P"]) // self.batch_size + 1
                                  for d in divisions if len(d["P"]) >= 2), ctx)
        sums, counts, steps = {}, {}, 0
        for a, b in ((0, 1), (1, 0)):
            net, partner = self._networks()[a], self._networks()[b]
            for terms in self._train_network(epoch, net, partner, divisions[b],
                                             divisions[a], ctx, "AB"[a]):
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + value
                    counts[name] = counts.get(name, 0) + 1
                steps += 1
        self.history.record("train_batch_count", steps)
        result = {name: total / counts[name] for name, total in sums.items()}
        n = len(self.training_rows(ctx))
        result["n_trusted_a"] = len(divisions[0]["P"])
        result["n_trusted_b"] = len(divisions[1]["P"])
        result["missing_classes_a"] = divisions[0]["n_missing"]
        result["missing_classes_b"] = divisions[1]["n_missing"]
        result["noise_rate"] = 1.0 - (result["n_trusted_a"] + result["n_trusted_b"]) / (2 * n)
        for k, division in zip("ab", divisions):
            result[f"trusted_per_class_{k}"] = division["trusted_per_class"]
            result[f"covering_rate_{k}"] = division["covering_rate"]
        return result

    def _cycle(self, rows, ctx):
        """Endless stream of batches over ``rows``, reshuffled each pass."""
        while True:
            yield from self.shuffled_batches(rows, self.batch_size, ctx)

    def _train_network(self, epoch, net, partner, division, own_division, ctx, name):
        """One pass of network ``net`` over its partner's trusted split."""
        P, U = division["P"], division["U"]
        if len(P) < 2:
            warnings.warn(f"Epoch {epoch}: network {name}'s partner trusts {len(P)} "
                          "sample(s); skipping its co-training this epoch.", RuntimeWarning)
            return
        use_u = self.use_unlabeled and len(U) > 1
        warm = self.warmup_epochs
        contrast_on = epoch > warm + self.start_contrastive
        # The reference runs the key encoder, queue and (train-mode) query pass
        # in every epoch after warm-up, even while their loss weight is zero.
        # Skipping them changes no parameter update, only the batch-norm
        # running statistics, hence eval-mode predictions slightly.
        key_branch = self.use_contrastive and epoch >= warm + self.start_contrastive
        # |P| // B + 1 as in the paper; the reference's ceil(|P| / B) is one
        # fewer when B divides |P|.
        num_iter = len(P) // self.batch_size + 1
        labeled = self._cycle(P, ctx)
        unlabeled = self._cycle(U, ctx) if use_u else None
        r_source = division["q"] if self.use_co_pseudo_labels else own_division["q"]
        net.train()
        partner.eval()
        state = self.coreg_state_
        T = self.sharpen_temperature
        for it in range(num_iter):
            ix = next(labeled)
            rows = torch.as_tensor(ix, device=ctx.device)
            x = ctx.batch(ix)
            nx = len(ix)
            weak = [ctx.augment("weak", x), ctx.augment("weak", x)]
            xs1, xs2 = ctx.augment("strong", x), ctx.augment("strong", x)
            if use_u:
                u = ctx.batch(next(unlabeled))
                weak += [ctx.augment("weak", u), ctx.augment("weak", u)]
                us1, us2 = ctx.augment("strong", u), ctx.augment("strong", u)
            sizes = [len(view) for view in weak]
            with torch.no_grad():
                # The weak views of this network's four passes in one forward;
                # batch norm still sees each view on its own (train mode).
                with per_chunk_batch_norm(net, sizes):
                    logits_w, z_w = net(torch.cat(weak), return_features=True)
                probs_w = torch.softmax(logits_w, 1).split(sizes)
                z_w1 = z_w[:nx]
                p_mean = (probs_w[0] + probs_w[1]) / 2
                tx = dis.sharpen(dis.co_pseudo_labels(ctx.Y[rows], r_source[rows], p_mean,
                                                      division["w"][rows]), T)
                if use_u:
                    # The partner is in eval mode: one pass over both views
                    # gives exactly what two passes would.
                    pb1, pb2 = torch.softmax(partner(torch.cat(weak[2:])), 1).split(sizes[2:])
                    tu = dis.sharpen(dis.unlabeled_targets(probs_w[2], probs_w[3], pb1, pb2), T)
            views, targets = [xs1, xs2], [tx, tx]
            if use_u:
                views += [us1, us2]
                targets += [tu, tu]
            inputs, all_targets = torch.cat(views), torch.cat(targets)
            lam = dis.sample_mixup_lambda(self.mixup_alpha, ctx.rng)
            perm = torch.randperm(len(inputs), generator=ctx.generator).to(ctx.device)
            mixed_x, mixed_t = dis.mixup(inputs, all_targets, lam, perm)
            logits, z_mixed = net(mixed_x, return_features=True)
            terms = {"loss_x": dis.mixed_cross_entropy(logits[:2 * nx], mixed_t[:2 * nx])}
            loss = terms["loss_x"]
            if use_u:
                terms["loss_u"] = dis.mixed_mse(logits[2 * nx:], mixed_t[2 * nx:])
                ramp = dis.rampup(epoch, it, num_iter, warm, self.rampup_length)
                loss = loss + self.lambda_u * ramp * terms["loss_u"]
            if self.use_prototypes:
                state.prototypes.copy_(dis.update_prototypes(
                    state.prototypes, *_distributed.gather(self, z_w1, tx.argmax(1)),
                    self.prototype_momentum))
                if contrast_on:
                    s = dis.prototype_probs(z_mixed, state.prototypes,
                                            self.prototype_temperature)
                    terms["loss_prototype"] = dis.prototype_loss(
                        s, all_targets, all_targets[perm], lam, 2 * nx, self.lambda_u)
                    loss = loss + self.lambda_prototype * terms["loss_prototype"]
            if key_branch:
                net.momentum_update(self.key_momentum)
                anchor_t = tx if not use_u else torch.cat([tx, tu])
                flags = torch.zeros(len(anchor_t), dtype=torch.bool, device=ctx.device)
                flags[:nx] = True
                keys = net.key_features(xs2 if not use_u else torch.cat([xs2, us2]))
                if contrast_on:
                    _, queries = net(xs1 if not use_u else torch.cat([xs1, us1]),
                                     return_features=True)
                    queue_z, queue_t, queue_flags = net.queue()
                    # noisy_supcon_loss on contrastive_masks, without building
                    # the masks: a third of the time on feature vectors
                    terms["loss_contrastive"] = dis.supcon_loss_from_labels(
                        queries, keys, queue_z, anchor_t.argmax(1), flags,
                        queue_t.argmax(1), queue_flags, self.contrastive_temperature)
                    loss = loss + self.lambda_contrastive * terms["loss_contrastive"]
                net.enqueue(*_distributed.gather(self, keys, anchor_t, flags))
            values = _distributed.average(self, {k: float(v.detach()) for k, v in terms.items()})
            self.check_finite(epoch, {**values, "train_loss": float(loss.detach())},
                              f" (network {name})")
            self.step_network(net, loss, (x, ctx.Y[rows]), logits_w[:nx])
            yield values

    # ------------------------------------------------------ fitted results
    def after_fit(self, ctx):
        divisions = ctx.extra.get("divisions")
        Y = ctx.Y
        if divisions is None:
            self.trust_ = None
            probs = (self.module_.memory + self.module2_.memory) / 2
            self.label_distribution_ = dis.restrict_to_candidates(Y, probs).cpu().numpy()
            return
        a, b = divisions
        self.trust_ = torch.stack([a["w"], b["w"]]).cpu().numpy()
        mem_a, mem_b = self.module_.memory, self.module2_.memory
        dist = (dis.co_pseudo_labels(Y, b["q"], mem_a, b["w"])
                + dis.co_pseudo_labels(Y, a["q"], mem_b, a["w"])) / 2
        self.label_distribution_ = dist.cpu().numpy()


def _check_verified(verified, Y):
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

"""Partial-label baselines on the same machinery as CoRegClassifier: one
network, one optimizer, the same inputs, augmentations, callbacks and
history.

- :class:`PRODENClassifier`: progressive identification (Lv et al., ICML 2020).
- :class:`CCClassifier`: the classifier-consistent loss (Feng et al.,
  NeurIPS 2020). On true labels (1-D ``y``, singleton sets) it is ordinary
  cross-entropy training: the supervised upper bound.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ._methods import label_math as dis
from ._estimator.base import PartialLabelNet
from ._nn.networks import ClassifierNetwork

__all__ = ["CCClassifier", "PRODENClassifier", "cc_loss", "proden_loss"]

_AUGMENT_KINDS = {"weak": "weak", "strong": "strong", "none": "test"}


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def proden_loss(logits, weights):
    """PRODEN's weighted cross-entropy ``mean_i -sum_j w_ij log p_ij``.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, C)
        Network outputs before the softmax.
    weights : torch.Tensor of shape (n, C)
        Per-sample label weights, on the simplex and zero outside the
        candidate set.

    Returns
    -------
    loss : torch.Tensor
        Scalar tensor.

    Examples
    --------
    >>> import torch
    >>> logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    >>> round(proden_loss(logits, torch.tensor([[0.5, 0.5, 0.0]])).item(), 4)
    1.0397
    """
    weights = weights.to(dtype=logits.dtype, device=logits.device)
    return -(weights * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def cc_loss(logits, Y):
    """Classifier-consistent loss ``mean_i -log(sum_{j in S_i} p_ij)``.

    Computed as ``logsumexp`` of the log-probabilities over the candidates,
    so it needs no ``eps`` and stays finite when the set's mass is tiny.
    Unlike :func:`~sklearn_npll._methods.label_math.partial_cross_entropy`,
    rows whose set holds every class are not excluded: they contribute 0 to
    the sum and count in the mean, as in the reference code.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, C)
        Network outputs before the softmax.
    Y : torch.Tensor of shape (n, C)
        0/1 candidate matrix; every row non-empty.

    Returns
    -------
    loss : torch.Tensor
        Scalar tensor.

    Examples
    --------
    >>> import torch
    >>> logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]))
    >>> Y = torch.tensor([[1, 1, 0], [1, 1, 1]])
    >>> round(cc_loss(logits, Y).item(), 4)  # (-log(0.75) - log(1)) / 2
    0.1438
    """
    log_p = F.log_softmax(logits, dim=1)
    masked = log_p.masked_fill(Y.to(log_p.device) <= 0, float("-inf"))
    return -torch.logsumexp(masked, dim=1).mean()


class PRODENState(nn.Module):
    """PRODEN's per-sample label weights, kept as a buffer so that
    checkpoints carry them.

    Parameters
    ----------
    n_samples : int
    n_classes : int

    Attributes
    ----------
    weights : torch.Tensor of shape (n_samples, n_classes)
        Uniform over each candidate set once :meth:`start` has run.
    started : torch.Tensor (bool scalar)
        Whether the weights have been initialised from the candidate sets.
    """

    def __init__(self, n_samples, n_classes):
        super().__init__()
        self.register_buffer("weights", torch.zeros(n_samples, n_classes))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def start(self, Y):
        """Set the weights uniform over the candidates, unless already set
        (a warm start or a loaded checkpoint keeps its weights)."""
        if not bool(self.started):
            self.weights.copy_(dis.restrict_to_candidates(Y, torch.ones_like(Y)))
            self.started.fill_(True)

    @torch.no_grad()
    def update(self, rows, Y, probs):
        """``w_i <- normalise(Y_i * p_i)`` for the given rows."""
        self.weights[rows] = dis.restrict_to_candidates(Y, probs).to(self.weights.dtype)


# ---------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------


class _OneNetworkClassifier(PartialLabelNet):
    """One ``ClassifierNetwork`` trained by one optimizer on a per-batch
    loss; subclasses give the loss (:meth:`batch_loss`) and optional state."""

    def __init__(
        self,
        module=None,
        *,
        max_epochs=100,
        batch_size=256,
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        optimizer=torch.optim.SGD,
        cosine_epochs=None,
        augment="weak",
        flip=True,
        padding=None,
        weak_augment=None,
        strong_augment=None,
        image_size="auto",
        memory_budget=2**31,
        num_workers=None,
        precision="auto",
        device_store="auto",
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
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.cosine_epochs = cosine_epochs
        self.augment = augment
        self.flip = flip
        self.padding = padding
        self.weak_augment = weak_augment
        self.strong_augment = strong_augment
        self.image_size = image_size
        self.memory_budget = memory_budget
        self.num_workers = num_workers
        self.precision = precision
        self.device_store = device_store
        self.validation_fraction = validation_fraction
        self.callbacks = callbacks
        self.verbose = verbose
        self.device = device
        self.random_state = random_state
        self.warm_start = warm_start
        self.keep_training_state = keep_training_state
        self._finish_init(kwargs)

    # ----------------------------------------------------------- networks
    def build_networks(self, encoder_factory):
        return {"module": ClassifierNetwork(encoder_factory(), self.n_classes_,
                                            self.sample_shape_)}

    def inference_networks(self):
        return [self.module_]

    # ------------------------------------------------------------- epochs
    def _augment_kind(self):
        if not isinstance(self.augment, str) or self.augment not in _AUGMENT_KINDS:
            raise ValueError(
                f"augment must be one of {sorted(_AUGMENT_KINDS)}; got {self.augment!r}.")
        return _AUGMENT_KINDS[self.augment]

    def begin_epoch(self, ctx):
        """Hook run before the first batch of every epoch."""

    def batch_loss(self, logits, rows, ctx):
        """The loss of one batch (``rows`` index the training set)."""
        raise NotImplementedError

    def after_step(self, logits, rows, ctx):
        """Hook run after each optimizer step with the batch's detached logits."""

    def epoch_terms(self, ctx):
        """Extra per-epoch values for the history."""
        return {}

    def run_epoch(self, epoch, ctx):
        kind = self._augment_kind()
        net = self.module_
        self.begin_epoch(ctx)
        net.train()
        total, steps = 0.0, 0
        batches = self.shuffled_batches(self.training_rows(ctx), self.batch_size, ctx)
        self.announce_batches(len(batches), ctx)
        for idx in batches:
            rows = torch.as_tensor(idx, device=ctx.device)
            x = ctx.batch(idx)
            logits = net(ctx.augment(kind, x))
            loss = self.batch_loss(logits, rows, ctx)
            self.check_finite(epoch, {"loss": loss})
            self.step_network(net, loss, (x, ctx.Y[rows]), logits)
            self.after_step(logits.detach(), rows, ctx)
            total += float(loss.detach())
            steps += 1
        self.history.record("train_batch_count", steps)
        return {"loss": total / max(steps, 1), **self.epoch_terms(ctx)}


class PRODENClassifier(_OneNetworkClassifier):
    """PRODEN: progressive identification of the true labels.

    Lv et al., "Progressive Identification of True Labels for Partial-Label
    Learning", ICML 2020. Each training sample carries label weights
    ``w_i`` over its candidate set, uniform at the start. The loss is the
    weighted cross-entropy ``-sum_j w_ij log p_ij``; right after each
    optimizer step the weights of the batch's samples become the model's own
    predictions on that batch (detached, taken before the step) restricted
    to the candidates and renormalised: ``w_i = normalise(Y_i * p_i)``.
    This follows the reference code, which updates per batch (the paper
    describes an update every epoch). The weights never leave the candidate
    set, so a set without the true label cannot recover it.

    One network and one optimizer, on the same machinery as
    :class:`~sklearn_npll.CoRegClassifier`: the same inputs (feature
    matrices, grey or RGB images, paths, torch datasets, the annotator's
    output), 1-D labels as singleton sets, skorch callbacks and history.

    Parameters
    ----------
    module : None, nn.Module class or instance, default=None
        The encoder, returning ``(batch, d)`` features. None chooses one from
        the input: an MLP for feature vectors, a small CNN for images under
        32 px, PreAct ResNet-18 from 32 px. Its constructor arguments are set
        with ``module__<name>``.
    max_epochs : int, default=100
        Number of epochs.
    batch_size : int, default=256
        Training batch size.
    lr : float, default=0.01
        Initial learning rate.
    momentum : float, default=0.9
        SGD momentum (passed to optimizers that take it).
    weight_decay : float, default=5e-4
        Weight decay (passed to optimizers that take it).
    optimizer : torch optimizer class, default=torch.optim.SGD
        Extra arguments with ``optimizer__<name>``.
    cosine_epochs : int or None, default=None
        Period of the per-epoch cosine learning-rate schedule; None uses
        ``max_epochs``.
    augment : {"weak", "strong", "none"}, default="weak"
        Which built-in augmentation the training batches get ("none":
        normalisation only). The weight update uses the predictions on the
        same augmented batch.
    flip : bool, default=True
        Random horizontal flips in the image augmentations (turn off for
        digits, signs and text).
    padding : int or None, default=None
        Padding of the random crop; None: 4 px at 32 px, scaled with size.
    weak_augment, strong_augment : callable or None, default=None
        Your own per-sample transforms on one ``(C, H, W)`` tensor in
        [0, 1], in place of the built-in weak and strong augmentations.
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
    validation_fraction : float or None, default=None
        Hold out this fraction of the training samples and record the
        covering rate of predictions on them as ``valid_covering_rate`` each
        epoch. Held-out samples keep their initial (uniform) weights.
    callbacks : list of (name, skorch callback) or None, default=None
        Extra skorch callbacks (``Checkpoint``, ``EarlyStopping``,
        ``EpochScoring``, ``GradientNormClipping``, ...). Training batches
        reach them as ``batch=(inputs before augmentation, candidate rows)``
        with the network's logits as ``y_pred``; validation batches
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
        Seeds every random draw of a fit: initialisation, data order and
        augmentation.
    warm_start : bool, default=False
        ``fit`` continues from the current state (e.g. after a skorch
        ``LoadInitState``) up to ``max_epochs`` epochs in total, on the
        learning-rate schedule where it stopped, instead of re-initialising.
        ``partial_fit`` trains one more epoch per call.
    keep_training_state : bool, default=False
        Whether pickles (and ``copy.copy``) of the fitted estimator keep the
        state that only training needs (PRODEN's label weights, the
        optimizer's buffers) so that
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
    module_ : ClassifierNetwork
        The network.
    proden_state_ : PRODENState
        The label weights (buffer ``weights``, shape (n_samples, n_classes)).
    label_distribution_ : ndarray of shape (n_samples, n_classes)
        The final label weights: on the simplex, zero outside each set.
    history_ : skorch History
        Per epoch: ``loss``, ``mean_max_weight`` (mean over the training
        samples of their largest weight: 1 when every set is disambiguated),
        ``train_loss``, ``train_batch_count``, ``lr``, ``dur``.
    n_features_in_ : int
        Only for feature-vector inputs.

    See Also
    --------
    CCClassifier : The classifier-consistent loss, without label weights.
    CoRegClassifier : Co-Reg, for noisy partial labels.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll import PRODENClassifier, make_partial_labels
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.normal(-2, 1, (60, 4)), rng.normal(2, 1, (60, 4))].astype("float32")
    >>> y = np.r_[np.zeros(60, int), np.ones(60, int)]
    >>> Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.0, random_state=0)
    >>> clf = PRODENClassifier(max_epochs=5, batch_size=32, random_state=0).fit(X, Y)
    >>> clf.predict(X[:3]).shape
    (3,)
    >>> clf.label_distribution_.shape
    (120, 2)
    """

    def build_networks(self, encoder_factory):
        return {**super().build_networks(encoder_factory),
                "proden_state": PRODENState(self.n_train_samples_, self.n_classes_)}

    def begin_epoch(self, ctx):
        self.proden_state_.start(ctx.Y)

    def batch_loss(self, logits, rows, ctx):
        return proden_loss(logits, self.proden_state_.weights[rows])

    def after_step(self, logits, rows, ctx):
        self.proden_state_.update(rows, ctx.Y[rows], torch.softmax(logits.float(), dim=1))

    def epoch_terms(self, ctx):
        rows = torch.as_tensor(self.training_rows(ctx), device=ctx.device)
        return {"mean_max_weight":
                float(self.proden_state_.weights[rows].max(dim=1).values.mean())}

    def after_fit(self, ctx):
        self.proden_state_.start(ctx.Y)  # a fit of zero epochs
        self.label_distribution_ = self.proden_state_.weights.detach().cpu().numpy().copy()


class CCClassifier(_OneNetworkClassifier):
    """CC: the classifier-consistent partial-label loss.

    Feng et al., "Provably Consistent Partial-Label Learning", NeurIPS 2020.
    The loss of a sample is ``-log(sum_{j in S_i} p_ij)``: the probability
    mass the model puts on the candidate set (see :func:`cc_loss`; samples
    whose set holds every class contribute 0 and count in the mean, as in
    the reference code). On 1-D labels (singleton sets) this is plain
    cross-entropy, so ``CCClassifier().fit(X, y_true)`` gives the supervised
    upper bound with the same network, schedule and augmentation.

    One network and one optimizer, on the same machinery as
    :class:`~sklearn_npll.CoRegClassifier`: the same inputs (feature
    matrices, grey or RGB images, paths, torch datasets, the annotator's
    output), skorch callbacks and history.

    Parameters
    ----------
    module : None, nn.Module class or instance, default=None
        The encoder, returning ``(batch, d)`` features. None chooses one from
        the input: an MLP for feature vectors, a small CNN for images under
        32 px, PreAct ResNet-18 from 32 px. Its constructor arguments are set
        with ``module__<name>``.
    max_epochs : int, default=100
        Number of epochs.
    batch_size : int, default=256
        Training batch size.
    lr : float, default=0.01
        Initial learning rate.
    momentum : float, default=0.9
        SGD momentum (passed to optimizers that take it).
    weight_decay : float, default=5e-4
        Weight decay (passed to optimizers that take it).
    optimizer : torch optimizer class, default=torch.optim.SGD
        Extra arguments with ``optimizer__<name>``.
    cosine_epochs : int or None, default=None
        Period of the per-epoch cosine learning-rate schedule; None uses
        ``max_epochs``.
    augment : {"weak", "strong", "none"}, default="weak"
        Which built-in augmentation the training batches get ("none":
        normalisation only).
    flip : bool, default=True
        Random horizontal flips in the image augmentations (turn off for
        digits, signs and text).
    padding : int or None, default=None
        Padding of the random crop; None: 4 px at 32 px, scaled with size.
    weak_augment, strong_augment : callable or None, default=None
        Your own per-sample transforms on one ``(C, H, W)`` tensor in
        [0, 1], in place of the built-in weak and strong augmentations.
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
    validation_fraction : float or None, default=None
        Hold out this fraction of the training samples and record the
        covering rate of predictions on them as ``valid_covering_rate`` each
        epoch.
    callbacks : list of (name, skorch callback) or None, default=None
        Extra skorch callbacks (``Checkpoint``, ``EarlyStopping``,
        ``EpochScoring``, ``GradientNormClipping``, ...). Training batches
        reach them as ``batch=(inputs before augmentation, candidate rows)``
        with the network's logits as ``y_pred``; validation batches
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
        Seeds every random draw of a fit: initialisation, data order and
        augmentation.
    warm_start : bool, default=False
        ``fit`` continues from the current state (e.g. after a skorch
        ``LoadInitState``) up to ``max_epochs`` epochs in total, on the
        learning-rate schedule where it stopped, instead of re-initialising.
        ``partial_fit`` trains one more epoch per call.
    keep_training_state : bool, default=False
        Whether pickles (and ``copy.copy``) of the fitted estimator keep the
        state that only training needs (the optimizer's buffers) so that
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
    module_ : ClassifierNetwork
        The network.
    label_distribution_ : ndarray of shape (n_samples, n_classes)
        The final model's predictions on the training samples (test
        transform) restricted to each candidate set and renormalised.
    history_ : skorch History
        Per epoch: ``loss``, ``train_loss``, ``train_batch_count``, ``lr``,
        ``dur``.
    n_features_in_ : int
        Only for feature-vector inputs.

    See Also
    --------
    PRODENClassifier : Progressive identification with label weights.
    CoRegClassifier : Co-Reg, for noisy partial labels.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll import CCClassifier, make_partial_labels
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.normal(-2, 1, (60, 4)), rng.normal(2, 1, (60, 4))].astype("float32")
    >>> y = np.r_[np.zeros(60, int), np.ones(60, int)]
    >>> Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.0, random_state=0)
    >>> clf = CCClassifier(max_epochs=5, batch_size=32, random_state=0).fit(X, Y)
    >>> clf.predict(X[:3]).shape
    (3,)
    >>> upper = CCClassifier(max_epochs=5, batch_size=32, random_state=0).fit(X, y)
    """

    def batch_loss(self, logits, rows, ctx):
        return cc_loss(logits, ctx.Y[rows])

    def after_fit(self, ctx):
        probs = torch.softmax(self._predict_logits(ctx.data), dim=1)
        self.label_distribution_ = dis.restrict_to_candidates(
            ctx.Y.cpu(), probs).numpy()

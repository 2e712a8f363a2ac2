"""CoRegClassifier: Co-Reg (Wang et al., AAAI 2025) as a scikit-learn
classifier on skorch. The estimator keeps the parameters, the networks and
the fitted attributes; its epochs run in
:class:`~sklearn_npll._methods.coreg.CoRegTrainer`."""

import warnings
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._data.annotated import AnnotatedImages
from ._data.candidates import check_probabilities
from ._estimator.base import PartialLabelNet
from ._estimator.docstrings import fill_shared_docs
from ._estimator.skorch_compat import finish_init
from ._methods import label_math as lm
from ._methods.coreg import CoRegTrainer
from ._nn.networks import CoRegNetwork, CoRegState

__all__ = ["CoRegClassifier"]


@fill_shared_docs
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
    {module}
    max_epochs : int, default=100
        Number of epochs (the reference uses 800 on CIFAR, 100 elsewhere).
    warmup_epochs : int, default=50
        Epochs of partial cross-entropy warm-up, each network on its own.
    batch_size : int, default=256
        Labeled (and unlabeled) batch size B; warm-up batches hold 2B.
    {lr}
    {momentum}
    {weight_decay}
    {optimizer}
    {cosine_epochs}
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
    teacher_warmup : bool, default=False
        Teacher-aware (opt-in): warm up on the teacher's probabilities
        restricted to each candidate set (cross-entropy with
        ``normalise(Y_i * P_i)``) instead of the partial cross-entropy and
        the confidence penalty. Needs the teacher's probabilities ``P``.
    teacher_prior : float, default=0.0
        Teacher-aware (opt-in): exponent ``beta`` of the teacher's
        probabilities as a prior on the pseudo-labels: the co-pseudo-labels
        become ``normalise(Y_i * Q_i * P_i ** beta)`` and the unlabeled
        targets ``normalise(t_i * P_i ** beta)``; 0 leaves them as in the
        paper. Needs the teacher's probabilities ``P``.
    {flip}
    {padding}
    {weak_augment}
    {image_size}
    {memory_budget}
    {num_workers}
    {on_bad_image}
    {precision}
    {device_store}
    predict_networks : {"both", "first"}, default="both"
        "first" predicts with network A alone, for half the inference cost.
    {validation_fraction}
    {callbacks}
        Co-Reg's training batches carry the logits of the batch's first weak
        view (its strong view in warm-up).
    {verbose}
    {device}
    {random_state}
        Co-Reg's own draws: MixUp and the mixtures.
    {warm_start}
    {keep_training_state}
        Co-Reg's training state: momentum encoders, projection heads, key
        queues, prediction memories, prototypes and division loss histories.
    {kwargs}

    Attributes
    ----------
    {classes_}
    {image_size_}
    module_, module2_ : CoRegNetwork
        Networks A and B (encoder, heads, momentum copy, queue, memory).
    coreg_state_ : CoRegState
        Shared prototypes and division loss histories.
    history_ : skorch History
        Per epoch: ``loss_pce``, ``loss_ne`` (warm-up; ``loss_teacher`` with
        ``teacher_warmup``), ``loss_x``,
        ``loss_u``, ``loss_prototype``, ``loss_contrastive``, ``train_loss``,
        ``n_trusted_a``, ``n_trusted_b``, ``noise_rate`` (estimated fraction
        outside the trusted splits), ``missing_classes_a``, ``missing_classes_b``
        (classes that are the best candidate of some samples but of no trusted
        one; a warning names them; the split columns are NaN during warm-up),
        ``n_trusted_per_class_a``, ``n_trusted_per_class_b`` (lists: trusted
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
    {n_features_in_}

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
        teacher_warmup=False,
        teacher_prior=0.0,
        flip=True,
        padding=None,
        weak_augment=None,
        strong_augment=None,
        image_size="auto",
        memory_budget=2**31,
        num_workers=None,
        on_bad_image="raise",
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
        self.teacher_warmup = teacher_warmup
        self.teacher_prior = teacher_prior
        self.flip = flip
        self.padding = padding
        self.weak_augment = weak_augment
        self.strong_augment = strong_augment
        self.image_size = image_size
        self.memory_budget = memory_budget
        self.num_workers = num_workers
        self.on_bad_image = on_bad_image
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
        finish_init(self, kwargs)

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
        "teacher_warmup": ["boolean"],
        "teacher_prior": [Interval(Real, 0, None, closed="left")],
        "predict_networks": [StrOptions({"both", "first"})],
    }

    trainer_class = CoRegTrainer
    # trains data-parallel under torchrun (see sklearn_npll._estimator.data_parallel)
    _data_parallel = True

    _log_keys_ignored = ("loss_pce", "loss_ne", "loss_teacher", "loss_x", "loss_u",
                         "loss_prototype", "loss_contrastive", "n_trusted_per_class_a",
                         "n_trusted_per_class_b", "covering_rate_a", "covering_rate_b")

    def _prepare_fit(self, X, y, classes=None):
        prepared = super()._prepare_fit(X, y, classes)
        if self.max_epochs <= self.warmup_epochs:
            warnings.warn(
                f"max_epochs={self.max_epochs} <= warmup_epochs={self.warmup_epochs}: this "
                "fit runs only the warm-up (partial cross-entropy, each network on its "
                "own) and no Co-Reg epoch, so trust_ stays None. Raise max_epochs or lower "
                "warmup_epochs.", UserWarning)
        return prepared

    def fit(self, X, y=None, verified=None, teacher_proba=None):
        """Fit both networks from candidate sets, optionally with verified labels.

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Training inputs: images of shape (n, H, W), (n, H, W, C) or
            (n, C, H, W), a feature matrix (n, d), or the annotator's output
            (which also carries the candidate sets and class names).
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
        teacher_proba : array-like of shape (n, C), default=None
            The teacher's class probabilities, for ``teacher_warmup`` and
            ``teacher_prior``; by default those ``X`` carries when it is the
            annotator's output.

        Returns
        -------
        self : CoRegClassifier
            The fitted estimator.

        Notes
        -----
        With ``warm_start=True`` a fitted estimator continues up to
        ``max_epochs`` epochs in total, as in :meth:`partial_fit`'s schedule.
        """
        return self._fit(X, y, fresh=not self.warm_start or not self.initialized_,
                         epochs=None, verified=verified,
                         soft_targets=self._teacher_proba(X, teacher_proba))

    def partial_fit(self, X, y=None, classes=None):
        """Train one more epoch, as skorch's ``partial_fit`` with ``max_epochs=1``.

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Training inputs, as in :meth:`fit`; the same samples on every call.
        y : array-like of shape (n, C) or (n,), list of sets, or None
            Candidate sets, as in :meth:`fit`.
        classes : None
            Ignored; present for scikit-learn's API (classes come from ``y``).

        Returns
        -------
        self : CoRegClassifier
            The estimator, trained one epoch further.
        """
        return self._fit(X, y, fresh=not self.initialized_, epochs=1,
                         soft_targets=self._teacher_proba(X, None))

    def _teacher_proba(self, X, teacher_proba):
        """The teacher's probabilities when a teacher-aware option needs them."""
        if not (self.teacher_warmup or self.teacher_prior):
            return None
        if teacher_proba is None and isinstance(X, AnnotatedImages):
            teacher_proba = X.proba
        if teacher_proba is None:
            return None  # the trainer says what is missing
        n = len(X)
        return check_probabilities(teacher_proba, n_samples=n)[0]

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

    # ------------------------------------------------------ fitted results
    def after_fit(self, ctx):
        divisions, Y = ctx.trainer.divisions, ctx.Y
        if divisions is None:
            self.trust_ = None
            probs = (self.module_.memory + self.module2_.memory) / 2
            self.label_distribution_ = lm.restrict_to_candidates(Y, probs).cpu().numpy()
            return
        a, b = divisions
        self.trust_ = torch.stack([a.trust, b.trust]).cpu().numpy()
        mem_a, mem_b = self.module_.memory, self.module2_.memory
        dist = (lm.co_pseudo_labels(Y, b.aligned, mem_a, b.trust)
                + lm.co_pseudo_labels(Y, a.aligned, mem_b, a.trust)) / 2
        self.label_distribution_ = dist.cpu().numpy()

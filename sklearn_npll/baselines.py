"""Partial-label baselines on the same machinery as CoRegClassifier: one
network, one optimizer, the same inputs, augmentations, callbacks and
history.

- :class:`PRODENClassifier`: progressive identification (Lv et al., ICML 2020).
- :class:`CCClassifier`: the classifier-consistent loss (Feng et al.,
  NeurIPS 2020). On true labels (1-D ``y``, singleton sets) it is ordinary
  cross-entropy training: the supervised upper bound.

Their losses and epochs live in :mod:`sklearn_npll._methods`.
"""

import torch
from sklearn.utils._param_validation import StrOptions

from ._estimator.base import PartialLabelNet
from ._estimator.docstrings import fill_shared_docs
from ._estimator.skorch_compat import finish_init
from ._methods import label_math as lm
from ._methods.cc import CCTrainer, cc_loss
from ._methods.one_network import AUGMENTATIONS
from ._methods.proden import PRODENState, PRODENTrainer, proden_loss
from ._nn.networks import ClassifierNetwork

__all__ = ["CCClassifier", "PRODENClassifier", "cc_loss", "proden_loss"]


class _OneNetworkClassifier(PartialLabelNet):
    """One ``ClassifierNetwork`` trained by a
    :class:`~sklearn_npll._methods.one_network.OneNetworkTrainer`."""

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
        finish_init(self, kwargs)

    _parameter_constraints = {
        **PartialLabelNet._parameter_constraints,
        "augment": [StrOptions(set(AUGMENTATIONS))],
    }

    def build_networks(self, encoder_factory):
        return {"module": ClassifierNetwork(encoder_factory(), self.n_classes_,
                                            self.sample_shape_)}

    def inference_networks(self):
        return [self.module_]


@fill_shared_docs
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
    {module}
    max_epochs : int, default=100
        Number of epochs.
    batch_size : int, default=256
        Training batch size.
    {lr}
    {momentum}
    {weight_decay}
    {optimizer}
    {cosine_epochs}
    {augment}
        The weight update uses the predictions on the same augmented batch.
    {flip}
    {padding}
    {weak_augment}
    {image_size}
    {memory_budget}
    {num_workers}
    {precision}
    {device_store}
    {validation_fraction}
        Held-out samples keep their initial (uniform) weights.
    {callbacks}
    {verbose}
    {device}
    {random_state}
    {warm_start}
    {keep_training_state}
        PRODEN's training state: its label weights.
    {kwargs}

    Attributes
    ----------
    {classes_}
    {image_size_}
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
    {n_features_in_}

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

    trainer_class = PRODENTrainer

    def build_networks(self, encoder_factory):
        return {**super().build_networks(encoder_factory),
                "proden_state": PRODENState(self.n_train_samples_, self.n_classes_)}

    def after_fit(self, ctx):
        self.proden_state_.start(ctx.Y)  # a fit of zero epochs
        self.label_distribution_ = self.proden_state_.weights.detach().cpu().numpy().copy()


@fill_shared_docs
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
    {module}
    max_epochs : int, default=100
        Number of epochs.
    batch_size : int, default=256
        Training batch size.
    {lr}
    {momentum}
    {weight_decay}
    {optimizer}
    {cosine_epochs}
    {augment}
    {flip}
    {padding}
    {weak_augment}
    {image_size}
    {memory_budget}
    {num_workers}
    {precision}
    {device_store}
    {validation_fraction}
    {callbacks}
    {verbose}
    {device}
    {random_state}
    {warm_start}
    {keep_training_state}
    {kwargs}

    Attributes
    ----------
    {classes_}
    {image_size_}
    module_ : ClassifierNetwork
        The network.
    label_distribution_ : ndarray of shape (n_samples, n_classes)
        The final model's predictions on the training samples (test
        transform) restricted to each candidate set and renormalised.
    history_ : skorch History
        Per epoch: ``loss``, ``train_loss``, ``train_batch_count``, ``lr``,
        ``dur``.
    {n_features_in_}

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

    trainer_class = CCTrainer

    def after_fit(self, ctx):
        probs = torch.softmax(self._predict_logits(ctx.data), dim=1)
        self.label_distribution_ = lm.restrict_to_candidates(ctx.Y.cpu(), probs).numpy()

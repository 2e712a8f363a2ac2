"""Partial-label baselines on the same machinery as CoRegClassifier: one
network, one optimizer, the same inputs, augmentations, callbacks and
history.

- :class:`PRODENClassifier`: progressive identification (Lv et al., ICML 2020).
- :class:`CCClassifier`: the classifier-consistent loss (Feng et al.,
  NeurIPS 2020). On true labels (1-D ``y``, singleton sets) it is ordinary
  cross-entropy training: the supervised upper bound.
- :class:`DistillationClassifier`: knowledge distillation of a teacher's
  probabilities (soft, or its top-1 class with label smoothing).

Their losses and epochs live in :mod:`sklearn_npll._methods`.
"""

import warnings
from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._data.annotated import AnnotatedImages
from ._data.candidates import check_probabilities
from ._estimator.base import PartialLabelNet
from ._estimator.docstrings import fill_shared_docs
from ._estimator.skorch_compat import finish_init
from ._estimator.validation import check_given_classes, check_partial_fit_classes
from ._methods import label_math as lm
from ._methods.cc import CCTrainer, cc_loss
from ._methods.distillation import DistillationTrainer
from ._methods.one_network import AUGMENTATIONS
from ._methods.proden import PRODENState, PRODENTrainer, proden_loss
from ._nn.networks import ClassifierNetwork

__all__ = ["CCClassifier", "DistillationClassifier", "PRODENClassifier", "cc_loss",
           "proden_loss"]


class _OneNetworkClassifier(PartialLabelNet):
    """One ``ClassifierNetwork`` trained by a
    :class:`~sklearn_npll._methods.one_network.OneNetworkTrainer` (the
    ``trainer_class`` of each subclass)."""

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
        on_bad_image="raise",
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
        self.on_bad_image = on_bad_image
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
    {on_bad_image}
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
    {on_bad_image}
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


@fill_shared_docs
class DistillationClassifier(_OneNetworkClassifier):
    """Knowledge distillation: a student network trained on a teacher's probabilities.

    The peer a practitioner tries first when a vision-language model can
    label their images: the student learns the teacher's class
    probabilities (``targets="soft"``, Hinton et al., 2015), or its top-1
    class (``targets="top1"``), with optional label smoothing. In a
    ``Pipeline`` after :class:`~sklearn_npll.VLMPartialAnnotator` it learns
    the annotator's template-averaged probabilities (``AnnotatedImages.proba``);
    ``fit(X, P)`` takes them as a matrix. The same networks, inputs,
    augmentations, budget and callbacks as the partial-label estimators, so
    it is the baseline Co-Reg must beat: a student that improves on its
    teacher, not one that copies it.

    The loss is ``T^2 * mean_i -sum_j t_ij log softmax(z_i / T)_j`` with
    ``t_i`` the targets (:func:`~sklearn_npll._methods.distillation.distillation_targets`):
    soft targets are ``normalise(p_i ** (1 / T))`` (the teacher's logits
    divided by ``T``); top-1 targets are one-hot, with ``T = 1``.
    Prediction uses the student's logits at temperature 1.

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
    {on_bad_image}
    {precision}
    {device_store}
    {validation_fraction}
        Here the covering rate is the agreement with the teacher's top-1.
    {callbacks}
    {verbose}
    {device}
    {random_state}
    {warm_start}
    {keep_training_state}
    temperature : float, default=1.0
        Temperature ``T`` of soft targets (> 1 softens the teacher).
    targets : {"soft", "top1"}, default="soft"
        Learn the teacher's probabilities, or its top-1 class.
    label_smoothing : float in [0, 1), default=0.0
        Mix the targets with the uniform distribution: ``(1 - e) t + e / C``.
    {kwargs}

    Attributes
    ----------
    {classes_}
    {image_size_}
    module_ : ClassifierNetwork
        The student network.
    label_distribution_ : ndarray of shape (n_samples, n_classes)
        The targets the student learned.
    history_ : skorch History
        Per epoch: ``loss``, ``train_loss``, ``train_batch_count``, ``lr``,
        ``dur``.
    {n_features_in_}

    See Also
    --------
    CoRegClassifier : Co-Reg, which learns from the teacher's candidate sets.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll import DistillationClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.normal(-2, 1, (60, 4)), rng.normal(2, 1, (60, 4))].astype("float32")
    >>> P = np.r_[np.tile([0.8, 0.2], (60, 1)), np.tile([0.3, 0.7], (60, 1))]
    >>> clf = DistillationClassifier(max_epochs=5, batch_size=32, random_state=0).fit(X, P)
    >>> clf.predict(X[:3]).shape
    (3,)
    """

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
        on_bad_image="raise",
        precision="auto",
        device_store="auto",
        validation_fraction=None,
        callbacks=None,
        verbose=0,
        device="auto",
        random_state=None,
        warm_start=False,
        keep_training_state=False,
        temperature=1.0,
        targets="soft",
        label_smoothing=0.0,
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
        self.on_bad_image = on_bad_image
        self.precision = precision
        self.device_store = device_store
        self.validation_fraction = validation_fraction
        self.callbacks = callbacks
        self.verbose = verbose
        self.device = device
        self.random_state = random_state
        self.warm_start = warm_start
        self.keep_training_state = keep_training_state
        self.temperature = temperature
        self.targets = targets
        self.label_smoothing = label_smoothing
        finish_init(self, kwargs)

    trainer_class = DistillationTrainer
    _parameter_constraints = {
        **_OneNetworkClassifier._parameter_constraints,
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "targets": [StrOptions({"soft", "top1"})],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
    }
    # the soft targets, not the top-1 sets, say which classes can be learnt
    _check_class_coverage = False

    def fit(self, X, y=None):
        """Fit the student to the teacher's probabilities.

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Training inputs; the annotator's output carries the teacher's
            probabilities (``proba``) and class names.
        y : array-like of shape (n, C), or (n,), or None
            The teacher's class probabilities (rows summing to one; a
            DataFrame's columns are the classes), or 1-D labels (one-hot
            targets); None when ``X`` carries them.

        Returns
        -------
        self : DistillationClassifier
            The fitted estimator.
        """
        X, P = self._teacher_targets(X, y)
        return self._fit(X, None, fresh=not self.warm_start or not self.initialized_,
                         epochs=None, soft_targets=P)

    def partial_fit(self, X, y=None, classes=None):
        """Train one more epoch on the teacher's probabilities.

        Parameters
        ----------
        X : array-like, list of images or paths, torch Dataset, or AnnotatedImages
            Training inputs, as in :meth:`fit`; the same samples on every call.
        y : array-like of shape (n, C), or (n,), or None
            The teacher's probabilities, as in :meth:`fit`.
        classes : array-like of shape (n_classes,), default=None
            The class names of the columns of ``y`` (None: those ``X`` or
            ``y`` carry, else ``0..C-1``); later calls must repeat them or
            pass None.

        Returns
        -------
        self : DistillationClassifier
            The estimator, trained one epoch further.
        """
        X, P = self._teacher_targets(X, y, check_partial_fit_classes(self, classes))
        return self._fit(X, None, fresh=not self.initialized_, epochs=1, soft_targets=P)

    def _teacher_targets(self, X, y, given=None):
        """``(X as AnnotatedImages with the top-1 sets and classes, P)``."""
        classes = X.classes if isinstance(X, AnnotatedImages) else None
        if given is not None and not self.initialized_:
            columns = getattr(y, "columns", None)
            classes = check_given_classes(given, classes if classes is not None else columns)
        images = X.images if isinstance(X, AnnotatedImages) else X
        if y is None:
            if not isinstance(X, AnnotatedImages) or X.proba is None:
                raise ValueError(
                    f"{type(self).__name__} learns a teacher's class probabilities: pass "
                    "them as y (an (n, C) matrix whose rows sum to 1), or the output of "
                    "VLMPartialAnnotator.transform as X (it carries them as .proba).")
            y = X.proba
        P, classes = check_probabilities(y, classes=classes)
        uncovered = np.flatnonzero(P.sum(axis=0) == 0)
        if uncovered.size and not self.initialized_:
            warnings.warn(
                f"{uncovered.size} class(es) get no probability from the teacher: "
                f"{classes[uncovered][:5].tolist()}. The student cannot learn them.",
                UserWarning)
        top1 = np.eye(P.shape[1], dtype=np.uint8)[P.argmax(axis=1)]
        return AnnotatedImages(images, candidates=top1, classes=classes), P

    def after_fit(self, ctx):
        self.label_distribution_ = ctx.trainer.targets.cpu().numpy()

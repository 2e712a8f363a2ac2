"""The parameters and attributes every partial-label estimator shares,
documented once.

A class docstring names a shared entry on a line of its own, ``{name}``, at
the indentation of its other entries; :func:`fill_shared_docs` puts the
entry there. Lines that follow the placeholder at the description's
indentation continue that entry with what is particular to the estimator.
"""

import re

__all__ = ["SHARED_DOCS", "fill_shared_docs"]

SHARED_DOCS = {
    "module": """\
module : None, nn.Module class or instance, default=None
    The encoder (backbone) of every network, returning ``(batch, d)``
    features. None chooses one from the input: an MLP for feature vectors, a
    small CNN for images under 32 px, PreAct ResNet-18 from 32 px. Its
    constructor arguments are set with ``module__<name>``.""",
    "lr": """\
lr : float, default=0.01
    Initial learning rate (of every network).""",
    "momentum": """\
momentum : float, default=0.9
    SGD momentum (passed to optimizers that take it).""",
    "weight_decay": """\
weight_decay : float, default=5e-4
    Weight decay (passed to optimizers that take it).""",
    "optimizer": """\
optimizer : torch optimizer class, default=torch.optim.SGD
    One optimizer with a parameter group per network; extra arguments with
    ``optimizer__<name>``.""",
    "cosine_epochs": """\
cosine_epochs : int or None, default=None
    Period E_cos of the per-epoch cosine learning-rate schedule; None uses
    ``max_epochs`` (the Co-Reg reference hard-codes 800).""",
    "augment": """\
augment : {"weak", "strong", "none"}, default="weak"
    Which built-in augmentation the training batches get ("none":
    normalisation only).""",
    "flip": """\
flip : bool, default=True
    Random horizontal flips in the image augmentations (turn off for digits,
    signs and text).""",
    "padding": """\
padding : int or None, default=None
    Padding of the random crop; None: 4 px at 32 px, scaled with size.""",
    "weak_augment": """\
weak_augment, strong_augment : callable or None, default=None
    Your own per-sample transforms (e.g. ``torchvision.transforms.v2``) on
    one ``(C, H, W)`` tensor in [0, 1] (uint8 input is converted), in place
    of the built-in weak and strong augmentations.""",
    "image_size": """\
image_size : "auto", None, int or (height, width), default="auto"
    Training size of image inputs. "auto" keeps images of one size as they
    are and resizes mixed sizes to a square whose side is the median shorter
    side, capped at 128 px (printed at ``verbose >= 1``); an int (square) or
    a pair resizes every image: antialiased scaling that keeps the aspect
    ratio until the image covers the target, then a centre crop. None
    requires images of one size. The size used is ``image_size_`` and is
    applied at prediction. Colour modes are unified: grey (1 channel) if
    every image is grey, otherwise RGB (alpha dropped, palettes expanded).""",
    "memory_budget": """\
memory_budget : int or None, default=2**31
    File paths, PIL images and datasets are decoded and resized once per fit
    into a uint8 store (float32 for float datasets); a store larger than
    this many bytes (2 GiB by default) is a memory-mapped temporary file
    instead of memory. None keeps it in memory.""",
    "num_workers": """\
num_workers : int or None, default=None
    Processes decoding images into the store (a torch ``DataLoader``'s
    ``num_workers``; large JPEGs decode at reduced scale). None: one per
    core, up to 8, for 256 images or more, otherwise none; -1: one per core;
    0: the main process.""",
    "on_bad_image": """\
on_bad_image : {"raise", "skip"}, default="raise"
    Image files, PIL images or dataset items that cannot be read at ``fit``
    (missing, damaged, not an image, over Pillow's
    ``PIL.Image.MAX_IMAGE_PIXELS``) are all found in one pass. "raise": one
    ``ValueError`` names every one with its index and reason. "skip": one
    warning names them, and they are left out of training together with
    their rows of ``y`` (candidate sets, verified flags, the teacher's
    probabilities). ``predict`` and ``score`` always raise: they answer for
    every sample.""",
    "precision": """\
precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
    Arithmetic of the forward passes (``torch.autocast``). "auto" is "fp32"
    on the CPU (results bit-identical to "fp32") and, on CUDA, "bf16" where
    the GPU supports it, else "fp16". "fp16" scales the loss with a
    ``GradScaler``. On CUDA, convolutional networks also run in
    ``channels_last`` memory format.""",
    "device_store": """\
device_store : "auto" or bool, default="auto"
    On CUDA, copy the whole training store to the GPU once ("auto": when it
    takes at most half of the GPU's free memory); otherwise each batch is
    gathered into pinned memory and copied without blocking.""",
    "validation_fraction": """\
validation_fraction : float or None, default=None
    Hold out this fraction of the training samples and record, each epoch,
    the covering rate of predictions on them as ``valid_covering_rate``
    (for skorch's ``EarlyStopping`` and ``Checkpoint``), with
    ``valid_covering_rate_best`` and ``valid_loss`` (the mean negative log
    of the probability on the candidate set).""",
    "callbacks": """\
callbacks : list of (name, skorch callback) or None, default=None
    Extra skorch callbacks (``Checkpoint``, ``EarlyStopping``,
    ``EpochScoring``, ``GradientNormClipping``, ...). Training batches reach
    them as ``batch=(inputs before augmentation, candidate rows)`` with the
    stepping network's logits as ``y_pred``; validation batches
    (``validation_fraction``) with the mean logits of prediction.
    ``on_grad_computed`` carries the parameters of the network that stepped.
    Scoring callbacks score against candidate sets: use ``scoring=None``
    (the covering rate) or :func:`~sklearn_npll.metrics.covering_rate_scorer`;
    a string scorer is refused at fit. An ``LRScheduler`` replaces the
    built-in cosine schedule (:class:`~sklearn_npll.callbacks.CosineLR`).""",
    "verbose": """\
verbose : int, default=0
    1 prints a line per epoch, 2 adds a progress bar.""",
    "device": """\
device : str, default="auto"
    "auto" uses CUDA when available.""",
    "random_state": """\
random_state : int, RandomState instance or None, default=None
    Seeds every random draw of a fit: initialisation, data order,
    augmentation, and the method's own draws.""",
    "warm_start": """\
warm_start : bool, default=False
    ``fit`` continues from the current state (e.g. after a skorch
    ``LoadInitState``) up to ``max_epochs`` epochs in total, on the
    learning-rate schedule where it stopped, instead of re-initialising.
    ``partial_fit`` trains one more epoch per call.""",
    "keep_training_state": """\
keep_training_state : bool, default=False
    Whether pickles (and ``copy.copy``) of the fitted estimator keep the
    state that only training needs (the method's state, the optimizer's
    buffers) so that ``partial_fit`` or ``fit`` with ``warm_start=True`` can
    continue after loading. By default a pickle holds what ``predict`` uses:
    the networks' encoders and classifier heads, the normalisation, classes
    and fitted attributes. ``copy.deepcopy`` always keeps everything;
    :meth:`trim_for_prediction` drops the training state in place.""",
    "kwargs": """\
**kwargs
    ``module__*``, ``optimizer__*`` and ``callbacks__*`` parameters.""",
    "classes_": """\
classes_ : ndarray of shape (n_classes,)
    Class labels (names when known).
n_classes_ : int
    Number of classes.
candidate_counts_ : ndarray of shape (n_classes,)
    How many candidate sets of the training data hold each class (0 for a
    class no set holds: it cannot be learnt, and ``score`` warns when a
    scored set holds it).""",
    "image_size_": """\
image_size_ : tuple (height, width) or None
    Size of the images the networks were trained on (None for feature
    vectors).""",
    "n_features_in_": """\
n_features_in_ : int
    Only for feature-vector inputs.""",
}

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{(?P<name>\w+)\}[ \t]*$", re.M)


def fill_shared_docs(obj):
    """Class decorator: replace each ``{name}`` line of the docstring by the
    shared entry ``name``, at the line's indentation.

    Examples
    --------
    >>> @fill_shared_docs
    ... class Demo:
    ...     '''Demo.
    ...
    ...     Parameters
    ...     ----------
    ...     {verbose}
    ...     '''
    >>> print(Demo.__doc__.splitlines()[4])
        verbose : int, default=0
    """
    def entry(match):
        name, indent = match.group("name"), match.group("indent")
        if name not in SHARED_DOCS:
            raise KeyError(f"{obj.__qualname__}'s docstring names no shared entry {name!r}.")
        return "\n".join(indent + line for line in SHARED_DOCS[name].splitlines())

    obj.__doc__ = _PLACEHOLDER.sub(entry, obj.__doc__)
    return obj

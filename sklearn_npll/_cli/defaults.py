"""Training settings the program chooses from the data when the user does
not: image size, epochs, batch size and device. Each comes with the reason
printed next to it."""

from .._data.image_store import AUTO_SIZE_CAP, resolve_auto_size
from .._data.inputs import GREY_MODES
from .._runtime import resolve_device

__all__ = ["choose_settings", "backbone_params"]


def _image_size(sizes, given):
    if given is not None:
        return given, "given"
    side = resolve_auto_size(sizes)
    if len(set(sizes)) == 1:
        return list(side), "the size of every photo"
    return list(side), f"median shorter side of the photos, at most {AUTO_SIZE_CAP} px"


def _epochs(n, given):
    if given is not None:
        return given, "given"
    epochs = 100 if n < 2000 else 60 if n < 20000 else 30
    return epochs, f"{n} photos: 100 under 2,000, 60 under 20,000, else 30"


def _batch_size(n, given):
    if given is not None:
        return given, "given"
    size = 8
    while size * 2 <= min(256, n // 4):
        size *= 2
    return size, "a power of two near a quarter of the photos, 8 to 256"


def choose_settings(args, sizes):
    """The training settings: those given, and defaults chosen from the data.

    Parameters
    ----------
    args : argparse.Namespace
        The ``train`` arguments (``image_size``, ``epochs``,
        ``warmup_epochs``, ``batch_size``, ``device``, ``seed``,
        ``backbone``, ``width``).
    sizes : list of (height, width)
        The photos' sizes.

    Returns
    -------
    settings : dict
        ``image_size`` ([h, w]), ``epochs``, ``warmup_epochs``,
        ``batch_size``, ``seed``, ``backbone`` (and ``width`` for
        ``"small-cnn"``).
    device : str
        The device the training runs on.
    reasons : dict
        For each setting, why it has its value.
    """
    n = len(sizes)
    given_size = None if args.image_size is None else [args.image_size] * 2
    size, size_why = _image_size(sizes, given_size)
    epochs, epochs_why = _epochs(n, args.epochs)
    batch_size, batch_why = _batch_size(n, args.batch_size)
    warmup = args.warmup_epochs if args.warmup_epochs is not None else epochs // 2
    device = str(resolve_device(args.device))
    settings = {"image_size": size, "epochs": epochs, "warmup_epochs": warmup,
                "batch_size": batch_size, "seed": args.seed, "backbone": args.backbone}
    if args.backbone == "small-cnn":
        settings["width"] = args.width
    reasons = {"image_size": size_why, "epochs": epochs_why, "batch_size": batch_why,
               "warmup_epochs": "given" if args.warmup_epochs is not None
               else "half of the epochs",
               "device": "given" if args.device != "auto" else "CUDA when available",
               "seed": "given" if args.seed != 0 else "the default"}
    return settings, device, reasons


def backbone_params(settings, modes):
    """The classifier's ``module`` parameters for the chosen backbone.

    Parameters
    ----------
    settings : dict
        The training settings (``backbone``, ``width``).
    modes : list of str
        The photos' PIL modes: one input channel when every photo is grey,
        else three (the classifier's own rule).

    Returns
    -------
    params : dict
        Empty for ``"auto"`` (the library chooses from the image size).
    """
    from .._nn.backbones import PreActResNet18, SmallCNN

    channels = 1 if all(mode in GREY_MODES for mode in modes) else 3
    if settings["backbone"] == "small-cnn":
        return {"module": SmallCNN, "module__in_channels": channels,
                "module__width": settings["width"]}
    if settings["backbone"] == "resnet18":
        return {"module": PreActResNet18, "module__in_channels": channels}
    return {}

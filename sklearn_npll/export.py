"""Export a fitted classifier's prediction path for serving: to ONNX (the
``onnx`` extra) and to ``torch.export``.

The exported model takes a float32 batch: images ``(B, C, H, W)`` with
values in [0, 1] (divide ``uint8`` pixels by 255) of any height and width,
with the fitted number of channels, or feature vectors ``(B, d)``. Images
are first brought to ``image_size_`` inside the model, as ``predict`` does
(:class:`CoverCrop`: antialiased bilinear scaling that keeps the aspect ratio
until the image covers the size, then a centre crop; images of that size pass
unchanged). The model then normalises the batch as ``predict`` does, runs the
inference networks (both Co-Reg networks, or the first with
``predict_networks="first"``) and returns the mean ``logits`` and their
softmax, ``probabilities``, whose columns follow ``classes_``. The class
names travel with the file.
"""

import json
import warnings

import numpy as np
import torch
from torch import nn

__all__ = ["CoverCrop", "PredictionModule", "prediction_module", "to_onnx", "to_torch_export",
           "load_torch_export"]


def _axis_weights(source, positions, n_out):
    """Weights ``(len(positions), len(source))`` of antialiased bilinear
    resampling of the pixels ``source`` (``arange(n_in)``, float64) to
    ``n_out`` pixels, one row for each output pixel in ``positions``: a
    triangle filter as wide as the scale when shrinking (torch's and
    Pillow's antialiased bilinear, align_corners=False), each row normalised
    to sum to one."""
    scale = (source[-1] + 1.0) / n_out
    support = torch.clamp(scale, min=1.0)
    centre = (positions + 0.5) * scale
    distance = (source[None, :] + 0.5 - centre[:, None]).abs() / support
    weights = torch.clamp(1.0 - distance, min=0.0)
    return (weights / weights.sum(1, keepdim=True)).float()


class CoverCrop(nn.Module):
    """Resize a batch of images to ``size`` as the library's ``predict`` does.

    Antialiased bilinear scaling that keeps the aspect ratio until the
    image covers ``(height, width)``, then a centre crop; an image of that
    size passes unchanged. Written as two matrix products whose weights are
    computed from the input's size, so that an exported graph (ONNX,
    ``torch.export``) accepts any input size.

    Parameters
    ----------
    size : tuple (height, width)
        The output size, the estimator's ``image_size_``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_npll.export import CoverCrop
    >>> CoverCrop((8, 8))(torch.rand(2, 3, 20, 12)).shape
    torch.Size([2, 3, 8, 8])
    """

    def __init__(self, size):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))

    @staticmethod
    def _weights(source, n_out, scale):
        """The rows of the covering resize along one axis that the centre
        crop keeps (sizes as ``cover_size`` and ``center_crop`` compute them)."""
        covered = torch.clamp(torch.round((source[-1] + 1.0) * scale), min=float(n_out))
        start = torch.round((covered - n_out) / 2.0)
        positions = torch.arange(n_out, dtype=torch.float64, device=source.device) + start
        return _axis_weights(source, positions, covered)

    def forward(self, x):
        height, width = self.size
        # the input's pixel positions: its sides stay traced, never Python ints
        rows = torch.arange(x.shape[-2], dtype=torch.float64, device=x.device)
        cols = torch.arange(x.shape[-1], dtype=torch.float64, device=x.device)
        scale = torch.maximum(height / (rows[-1] + 1.0), width / (cols[-1] + 1.0))
        along_h = self._weights(rows, height, scale)
        along_w = self._weights(cols, width, scale)
        return torch.matmul(torch.matmul(along_h, x), along_w.transpose(0, 1))


class PredictionModule(nn.Module):
    """Resize (images), normalise, then average the logits of the networks.

    Parameters
    ----------
    networks : list of nn.Module
        Each maps a normalised batch to ``(B, n_classes)`` logits.
    mean, std : array-like of shape (C,) or (d,)
        Per-channel (images) or per-feature statistics.
    image_input : bool
        Whether inputs are ``(B, C, H, W)`` images (statistics per channel).
    image_size : tuple (height, width) or None, default=None
        Images of another size are first brought to this one
        (:class:`CoverCrop`); None passes them as they are.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from sklearn_npll.export import PredictionModule
    >>> module = PredictionModule([nn.Linear(3, 2)], mean=[0, 0, 0], std=[1, 1, 1],
    ...                           image_input=False)
    >>> logits, proba = module(torch.zeros(4, 3))
    >>> tuple(proba.shape)
    (4, 2)
    """

    def __init__(self, networks, mean, std, image_input, image_size=None):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.resize = CoverCrop(image_size) if image_input and image_size else None
        shape = (1, -1, 1, 1) if image_input else (1, -1)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)).reshape(shape))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, np.float32)).reshape(shape))

    def forward(self, x):
        if self.resize is not None:
            x = self.resize(x)
        x = (x - self.mean) / self.std
        logits = torch.stack([net(x) for net in self.networks]).mean(0)
        return logits, torch.softmax(logits, dim=1)


def prediction_module(estimator):
    """The prediction path of a fitted estimator as a CPU ``nn.Module``.

    The module is a copy in eval mode: the estimator is left as it is.

    Parameters
    ----------
    estimator : fitted CoRegClassifier, PRODENClassifier or CCClassifier
        The estimator whose inference networks are copied.

    Returns
    -------
    module : PredictionModule
        ``module(x)`` returns ``(logits, probabilities)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_npll import CCClassifier
    >>> X = np.random.RandomState(0).normal(size=(20, 3)).astype("float32")
    >>> clf = CCClassifier(max_epochs=1, batch_size=8, random_state=0).fit(X, np.arange(20) % 2)
    >>> import torch
    >>> from sklearn_npll.export import prediction_module
    >>> logits, proba = prediction_module(clf)(torch.from_numpy(X[:4]))
    >>> tuple(proba.shape)
    (4, 2)
    """
    import copy

    estimator.check_is_fitted()
    networks = [copy.deepcopy(net.for_prediction()).float().cpu().eval()
                for net in estimator.inference_networks()]
    images = len(estimator.sample_shape_) == 3
    size = tuple(estimator.sample_shape_[1:]) if images else None
    return PredictionModule(networks, estimator.input_mean_, estimator.input_std_,
                            image_input=images, image_size=size).eval()


def _example(estimator, batch_size=2):
    return torch.rand((batch_size, *estimator.sample_shape_))


def _classes_json(estimator):
    return json.dumps(np.asarray(estimator.classes_).tolist())


def to_onnx(estimator, path, opset_version=17):
    """Write the prediction path to an ONNX file.

    Inputs ``x`` (float32; batch size free, and for images height and
    width free: the graph resizes them to ``image_size_`` as ``predict``
    does); outputs ``logits`` and ``probabilities``; the class names are
    stored as the model's ``classes`` metadata (a JSON list). Needs the
    ``onnx`` extra.

    Parameters
    ----------
    estimator : fitted estimator
        A fitted CoRegClassifier, PRODENClassifier or CCClassifier.
    path : str or path-like
        The ONNX file to write.
    opset_version : int, default=17
        ONNX operator set of the exported graph.

    Returns
    -------
    path : str or path-like
        ``path``, as given.

    Examples
    --------
    >>> import json, onnx, onnxruntime                          # doctest: +SKIP
    >>> to_onnx(clf, "model.onnx")                               # doctest: +SKIP
    >>> session = onnxruntime.InferenceSession("model.onnx")     # doctest: +SKIP
    >>> logits, proba = session.run(None, {"x": images})         # doctest: +SKIP
    >>> classes = json.loads({p.key: p.value for p in
    ...     onnx.load("model.onnx").metadata_props}["classes"])  # doctest: +SKIP
    """
    import onnx

    module = prediction_module(estimator)
    free = {0: "batch", 2: "height", 3: "width"} if module.resize is not None else {0: "batch"}
    with warnings.catch_warnings():
        # The built-in encoders test their input's shape in Python (the channel
        # check, SmallCNN's "pool while at least 8 px"): the tracer warns that
        # it records these answers as constants. They are constants: behind
        # CoverCrop the networks always see sample_shape_. A user's encoder
        # keeps its warnings (a branch on values would be a real problem).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                module=r"sklearn_npll\._nn\.")
        # the TorchScript-based exporter: the dynamo one needs onnxscript
        torch.onnx.export(module, (_example(estimator),), str(path), dynamo=False,
                          input_names=["x"], output_names=["logits", "probabilities"],
                          dynamic_axes={"x": free, "logits": {0: "batch"},
                                        "probabilities": {0: "batch"}},
                          opset_version=opset_version)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "classes", _classes_json(estimator)
    onnx.save(model, str(path))
    return path


def to_torch_export(estimator, path):
    """Write the prediction path as a ``torch.export`` program (``.pt2``).

    Batch size, and for images height and width, are dynamic (the program
    resizes images to ``image_size_`` as ``predict`` does). The class names
    travel as the program's extra file ``classes.json``.

    Parameters
    ----------
    estimator : fitted estimator
        A fitted CoRegClassifier, PRODENClassifier or CCClassifier.
    path : str or path-like
        The ``.pt2`` file to write.

    Returns
    -------
    path : str or path-like
        ``path``, as given.

    Examples
    --------
    >>> to_torch_export(clf, "model.pt2")                        # doctest: +SKIP
    >>> module, classes = load_torch_export("model.pt2")         # doctest: +SKIP
    >>> logits, proba = module(images)                           # doctest: +SKIP
    """
    module = prediction_module(estimator)
    free = {0: torch.export.Dim("batch", min=1)}
    if module.resize is not None:
        free.update({2: torch.export.Dim("height", min=1), 3: torch.export.Dim("width", min=1)})
    program = torch.export.export(module, (_example(estimator),), dynamic_shapes=(free,))
    torch.export.save(program, str(path), extra_files={"classes.json": _classes_json(estimator)})
    return path


def load_torch_export(path):
    """Load what :func:`to_torch_export` wrote.

    Parameters
    ----------
    path : str or path-like
        The ``.pt2`` file.

    Returns
    -------
    module : callable
        ``module(x)`` returns ``(logits, probabilities)``; its parameters do
        not require grad, so neither do its outputs.
    classes : ndarray
        The class names, one per column of the outputs.

    Examples
    --------
    >>> module, classes = load_torch_export("model.pt2")         # doctest: +SKIP
    >>> classes[module(images)[1].argmax(1)]                     # doctest: +SKIP
    """
    extra = {"classes.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    module = program.module()
    for parameter in module.parameters():  # for inference: outputs without grad
        parameter.requires_grad_(False)
    return module, np.asarray(json.loads(extra["classes.json"]))

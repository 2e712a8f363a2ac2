"""Export a fitted classifier's prediction path for serving: to ONNX (the
``onnx`` extra) and to ``torch.export``.

The exported model takes a float32 batch of the shape the estimator was
fitted on, ``(B, *sample_shape_)``: images ``(B, C, H, W)`` with values in
[0, 1] (divide ``uint8`` pixels by 255; resize to ``image_size_`` first) or
feature vectors ``(B, d)``. It normalises the batch as ``predict`` does,
runs the inference networks (both Co-Reg networks, or the first with
``predict_networks="first"``) and returns the mean ``logits`` and their
softmax, ``probabilities``, whose columns follow ``classes_``. The class
names travel with the file.
"""

import json

import numpy as np
import torch
from torch import nn

__all__ = ["PredictionModule", "prediction_module", "to_onnx", "to_torch_export",
           "load_torch_export"]


class PredictionModule(nn.Module):
    """Normalisation, then the mean logits of one or more networks.

    Parameters
    ----------
    networks : list of nn.Module
        Each maps a normalised batch to ``(B, n_classes)`` logits.
    mean, std : array-like of shape (C,) or (d,)
        Per-channel (images) or per-feature statistics.
    image_input : bool
        Whether inputs are ``(B, C, H, W)`` images (statistics per channel).

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

    def __init__(self, networks, mean, std, image_input):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        shape = (1, -1, 1, 1) if image_input else (1, -1)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)).reshape(shape))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, np.float32)).reshape(shape))

    def forward(self, x):
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
    return PredictionModule(networks, estimator.input_mean_, estimator.input_std_,
                            image_input=len(estimator.sample_shape_) == 3).eval()


def _example(estimator, batch_size=2):
    return torch.rand((batch_size, *estimator.sample_shape_))


def _classes_json(estimator):
    return json.dumps(np.asarray(estimator.classes_).tolist())


def to_onnx(estimator, path, opset_version=17):
    """Write the prediction path to an ONNX file.

    Inputs ``x`` (float32, batch size free); outputs ``logits`` and
    ``probabilities``; the class names are stored as the model's
    ``classes`` metadata (a JSON list). Needs the ``onnx`` extra.

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
    # the TorchScript-based exporter: the dynamo one needs onnxscript
    torch.onnx.export(module, (_example(estimator),), str(path), dynamo=False,
                      input_names=["x"], output_names=["logits", "probabilities"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"},
                                    "probabilities": {0: "batch"}},
                      opset_version=opset_version)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "classes", _classes_json(estimator)
    onnx.save(model, str(path))
    return path


def to_torch_export(estimator, path):
    """Write the prediction path as a ``torch.export`` program (``.pt2``).

    The class names travel as the program's extra file ``classes.json``.

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
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (_example(estimator),),
                                  dynamic_shapes=({0: batch},))
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
        ``module(x)`` returns ``(logits, probabilities)``.
    classes : ndarray
        The class names, one per column of the outputs.

    Examples
    --------
    >>> module, classes = load_torch_export("model.pt2")         # doctest: +SKIP
    >>> classes[module(images)[1].argmax(1)]                     # doctest: +SKIP
    """
    extra = {"classes.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), np.asarray(json.loads(extra["classes.json"]))

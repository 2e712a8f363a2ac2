"""What a training leaves for a deployer and a reader: the ONNX model with
its preprocessing, the report, and the one-page summary."""

import datetime
import json
import platform
import warnings

import numpy as np

from .console import CLIError, say

__all__ = ["export_onnx", "preprocessing", "build_report", "write_summary"]


def preprocessing(clf):
    """How an image becomes the ONNX model's input, as a JSON-able dict."""
    channels = clf.sample_shape_[0]
    return {
        "input": "x: float32 (batch, channels, height, width), pixel values in [0, 1]",
        "image_size": [int(s) for s in clf.image_size_],
        "mode": "L" if channels == 1 else "RGB",
        "scale": "divide the uint8 pixels by 255",
        "resize": ("scale (bilinear, antialiased, keeping the aspect ratio) until the "
                   "image covers image_size, then crop its centre to image_size"),
        "normalisation": "inside the model (per-channel mean and std of the training images)",
        "outputs": "logits and probabilities; columns follow the 'classes' metadata",
    }


def export_onnx(clf, path):
    """Write the ONNX model, its class names and preprocessing as metadata.

    Returns
    -------
    written : bool
        False (with a message) when the ``onnx`` extra is not installed.
    """
    try:
        import onnx
    except ImportError:
        say("  ONNX export skipped: install the onnx extra (pip install "
            "\"sklearn-npll[onnx]\") and run the same command again.")
        return False
    import torch

    from ..export import to_onnx

    with warnings.catch_warnings():
        # the tracer's notes on shape checks that hold for every batch
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        to_onnx(clf, path)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "preprocessing", json.dumps(preprocessing(clf))
    onnx.save(model, str(path))
    return True


def build_report(run, clf, paths, classes, *, required=False):
    """Write ``report.html`` of the RUN folder.

    Parameters
    ----------
    run : RunFolder
    clf : fitted classifier
    paths : list of pathlib.Path
        The training images.
    classes : list of str
    required : bool
        Raise a CLIError instead of printing a message when matplotlib is
        missing.

    Returns
    -------
    path : pathlib.Path or None
    """
    from ..report import write_report

    candidates, _, proba = run.load_annotation()
    try:
        return write_report(clf, [str(p) for p in paths], run.report, candidates=candidates,
                            teacher_proba=proba, class_names=classes,
                            title=f"{run.path.name}: {len(paths)} photos, "
                                  f"{len(classes)} classes")
    except ImportError as exc:
        message = (f"The report needs matplotlib ({exc}): pip install "
                   "\"sklearn-npll[report]\".")
        if required:
            raise CLIError(message) from exc
        say("  Report skipped. " + message)
        return None


def _versions():
    import open_clip
    import torch

    from .. import __version__

    return {"sklearn_npll": __version__, "torch": torch.__version__,
            "open_clip": open_clip.__version__, "python": platform.python_version()}


def _data_summary(identity, candidates, proba, skipped):
    classes = identity["classes"]
    top = np.bincount(proba.argmax(1), minlength=len(classes))
    return {"photos": identity["photos"], "n_images": len(identity["images"]),
            "images_fingerprint": identity["images_digest"], "skipped": skipped,
            "classes": classes, "mean_candidate_set_size": float(candidates.sum(1).mean()),
            "in_candidate_sets": dict(zip(classes, candidates.sum(0).tolist())),
            "teacher_top_class": dict(zip(classes, top.tolist()))}


def write_summary(run, *, identity, settings, device, student_proba, skipped, times,
                  n_verified):
    """Write ``summary.json`` and ``summary.md``: teacher, data, parameters,
    result, time and versions.

    Returns
    -------
    summary : dict
    """
    candidates, _, proba = run.load_annotation()
    classes = identity["classes"]
    agree = student_proba.argmax(1) == proba.argmax(1)
    student_top = np.bincount(student_proba.argmax(1), minlength=len(classes))
    summary = {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "teacher": settings["teacher"],
        "data": _data_summary(identity, candidates, proba, skipped),
        "parameters": {**{k: v for k, v in settings.items() if k != "teacher"},
                       "device": device, "n_verified": n_verified},
        "result": {"agreement_with_teacher": float(agree.mean()),
                   "student_top_class": dict(zip(classes, student_top.tolist()))},
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "versions": _versions(),
        "files": sorted(p.name for p in run.path.iterdir() if not p.name.startswith(".")),
    }
    run.write_json(run.summary_json, summary)
    run.summary_md.write_text(_markdown(summary), encoding="utf-8")
    return summary


def _table(mapping):
    return "\n".join(f"| {key} | {value} |" for key, value in mapping.items())


def _markdown(s):
    data, params, teacher = s["data"], s["parameters"], s["teacher"]
    per_class = "\n".join(
        f"| {c} | {data['in_candidate_sets'][c]} | {data['teacher_top_class'][c]} | "
        f"{s['result']['student_top_class'][c]} |" for c in data["classes"])
    return f"""# Training summary

Made {s['created']} by sklearn_npll {s['versions']['sklearn_npll']} (torch
{s['versions']['torch']}, open_clip {s['versions']['open_clip']}, Python
{s['versions']['python']}).

## Teacher

| setting | value |
|---|---|
{_table(teacher)}

## Data

{data['n_images']} photos from `{data['photos']}` ({len(data['skipped'])} unreadable left
out), {len(data['classes'])} classes; mean candidate-set size
{data['mean_candidate_set_size']:.2f}.

| class | in candidate sets | teacher's top class | student's class |
|---|---|---|---|
{per_class}

## Parameters

| parameter | value |
|---|---|
{_table(params)}

## Result

The student agrees with the teacher's top class on
{100 * s['result']['agreement_with_teacher']:.1f}% of the photos. See
`report.html` for where they disagree, and `sklearn-npll verify` for the photos
most worth checking by hand.

## Time (seconds)

| step | seconds |
|---|---|
{_table(s['seconds'])}
"""

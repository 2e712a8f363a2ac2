"""``sklearn-npll predict``: classes of new images from a RUN folder's
model, in Python or through its ONNX export; the vision-language model is
not needed."""

import csv
import json
import sys
import warnings

import numpy as np

from .console import CLIError, say
from .inputs import check_images, find_images
from .run_folder import RunFolder

__all__ = ["predict", "onnx_proba", "python_proba"]


def python_proba(run, files):
    """``(classes, probabilities)`` of the saved classifier on ``files``."""
    clf = run.load_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [str(c) for c in clf.classes_], clf.predict_proba(files)


def onnx_proba(run, files, batch_size=64):
    """``(classes, probabilities)`` of the ONNX export on ``files``: the
    images are read and resized as its ``preprocessing`` metadata says."""
    from .._data.image_store import load_images

    if not run.onnx.exists():
        raise CLIError(f"{run.path} has no model.onnx: install the onnx extra and run the "
                       "train command again to export it.")
    try:
        import onnxruntime
    except ImportError as exc:
        raise CLIError("--onnx needs onnxruntime: pip install \"sklearn-npll[onnx]\".") from exc
    session = onnxruntime.InferenceSession(str(run.onnx), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["classes"])
    prep = json.loads(meta["preprocessing"])
    data, _ = load_images(files, tuple(prep["image_size"]), mode=prep["mode"])
    pixels = data.store
    out = [session.run(["probabilities"],
                       {"x": pixels[i:i + batch_size].astype(np.float32) / 255.0})[0]
           for i in range(0, len(pixels), batch_size)]
    return classes, np.concatenate(out)


def write_predictions(files, classes, proba, out=None):
    """CSV rows ``file,class,probability`` to ``out`` (a path) or stdout."""
    best = proba.argmax(1)
    handle = open(out, "w", newline="", encoding="utf-8") if out else sys.stdout
    try:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "class", "probability"])
        for file, k, p in zip(files, best, proba):
            writer.writerow([file, classes[k], f"{p[k]:.6f}"])
    finally:
        if out:
            handle.close()
    if out:
        say(f"Wrote {len(files)} predictions to {out}")


def predict(args):
    """Run the ``predict`` command.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    status : int
        0.
    """
    run = RunFolder(args.run)
    if not args.onnx:
        run.identity()      # the ONNX model travels alone
    paths = check_images(find_images(args.images, what="IMAGES"), args.on_bad_image).paths
    files = [str(p) for p in paths]
    if args.onnx:
        classes, proba = onnx_proba(run, files)
    else:
        classes, proba = python_proba(run, files)
    write_predictions(files, classes, proba, args.out)
    return 0

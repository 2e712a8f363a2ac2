"""``sklearn-npll train``: from a photo folder and class names to a trained
classifier and its outputs, all inside the RUN folder. Running the same
command again after an interruption continues where it stopped."""

import os
import time
import warnings
from pathlib import Path

import numpy as np

from .._digest import digest
from .console import CLIError, listed, say, step
from .defaults import backbone_params, choose_settings
from .inputs import check_images, find_images, read_classes, read_verified
from .outputs import build_report, export_onnx, write_summary
from .run_folder import RunFolder, image_names

__all__ = ["train"]

STEPS = 6


def _teacher(args):
    pretrained = args.pretrained
    if pretrained and os.path.exists(pretrained):
        pretrained = str(Path(pretrained).resolve())
    teacher = {"model": args.model, "pretrained": pretrained, "templates": args.templates}
    if args.model_config:
        teacher["model_config"] = str(Path(args.model_config).resolve())
    return teacher


def _read_photos(args):
    """The classes, the photo folder and its readable photos (``Photos``)."""
    classes = read_classes(args.classes, args.classes_file)
    folder = Path(args.photos)
    if not folder.is_dir():
        raise CLIError(f"PHOTOS: {folder} is not a folder.")
    photos = check_images(find_images([folder]), args.on_bad_image)
    say(f"  {len(photos.paths)} photos in {folder}, {len(classes)} classes: {listed(classes)}")
    return classes, folder, photos


def _show_settings(settings, device, reasons, n_verified):
    h, w = settings["image_size"]
    say(f"  image size {h}x{w} ({reasons['image_size']}); backbone {settings['backbone']}")
    for name in ("epochs", "warmup_epochs", "batch_size", "seed"):
        say(f"  {name.replace('_', ' ')} {settings[name]} ({reasons[name]})")
    say(f"  device {device} ({reasons['device']})")
    if n_verified:
        say(f"  {n_verified} verified labels")


def _annotate(run, args, classes, paths, teacher, device):
    """The teacher's ``(candidates, votes, proba)``, from RUN when it made them."""
    saved = run.load_annotation(teacher)
    if saved is not None:
        say("  reusing the candidate sets saved in the RUN folder")
        return saved
    from ..annotate import VLMPartialAnnotator

    if args.model_config:
        import open_clip

        open_clip.add_model_config(args.model_config)
    annotator = VLMPartialAnnotator(classes, model_name=args.model, pretrained=args.pretrained,
                                    templates=args.templates, cache_dir=str(run.cache),
                                    device=device, verbose=True)
    try:
        annotator.fit()
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        raise CLIError(f"Could not load the teacher {args.model} / {args.pretrained}: "
                       f"{exc}") from exc
    candidates = annotator.annotate([str(p) for p in paths])
    run.save_annotation(teacher, candidates, annotator.votes_, annotator.proba_)
    say(f"  mean candidate-set size {candidates.sum(1).mean():.2f}")
    return candidates, annotator.votes_, annotator.proba_


def _with_verified(candidates, verified):
    """The candidate sets with the verified rows replaced by their label,
    and the mask of verified rows (None when there is none)."""
    if not verified:
        return candidates, None
    Y = candidates.copy()
    mask = np.zeros(len(Y), bool)
    rows = np.fromiter(verified, int)
    Y[rows] = 0
    Y[rows, [verified[r] for r in rows]] = 1
    mask[rows] = True
    outside = int((candidates[rows, [verified[r] for r in rows]] == 0).sum())
    say(f"  {len(rows)} verified labels ({outside} outside the teacher's candidate set)")
    return Y, mask


def _fit(run, settings, device, X, verified, modes):
    from skorch.callbacks import LoadInitState

    from ..callbacks import CheckpointError, TrainingCheckpoint
    from ..coreg import CoRegClassifier

    checkpoint = TrainingCheckpoint(str(run.checkpoint))
    clf = CoRegClassifier(
        max_epochs=settings["epochs"], warmup_epochs=settings["warmup_epochs"],
        batch_size=settings["batch_size"], image_size=tuple(settings["image_size"]),
        device=device, random_state=settings["seed"], verbose=1,
        callbacks=[("checkpoint", checkpoint), ("resume", LoadInitState(checkpoint))],
        **backbone_params(settings, modes))
    epoch = run.checkpoint_epoch()
    if epoch:
        say(f"  resuming from the checkpoint of epoch {epoch} of {settings['epochs']}")
    run.start_training(settings)
    try:
        clf.fit(X, verified=verified)
    except CheckpointError as exc:
        raise CLIError(f"{exc} Delete {run.checkpoint} to train from the start.") from exc
    if len(clf.history_) < settings["epochs"]:
        # skorch ends fit quietly on Ctrl-C: nothing is saved as finished
        raise KeyboardInterrupt
    clf.set_params(callbacks=None, verbose=0)
    return clf


def _train_student(run, settings, device, classes, photos, annotation, verified):
    from .._data.annotated import AnnotatedImages

    if run.finished(settings):
        say("  already trained with these settings: loading the saved model")
        return run.load_model()
    candidates, votes, proba = annotation
    Y, mask = _with_verified(candidates, verified)
    X = AnnotatedImages([str(p) for p in photos.paths], candidates=Y, classes=classes,
                        votes=votes, proba=proba)
    clf = _fit(run, settings, device, X, mask, photos.modes)
    from ..io import dump

    dump(clf, run.model)
    run.finish_training(settings)
    return clf


def _prepare(args):
    """Step 1: read the classes and photos, check the RUN folder, choose the settings."""
    step(1, STEPS, "Reading the class names and the photos")
    classes, folder, photos = _read_photos(args)
    run = RunFolder(args.out)
    identity = run.claim(classes, folder, photos.paths)
    settings, device, reasons = choose_settings(args, photos.sizes)
    settings["teacher"] = _teacher(args)
    verified = {}
    if args.verified:
        verified = read_verified(args.verified, image_names(photos.paths, folder), classes)
        settings["verified"] = digest(repr(sorted(verified.items())))
    _show_settings(settings, device, reasons, len(verified))
    changed = run.settings_changed(settings)
    if changed:
        say(f"  the RUN folder holds a training with other settings ({', '.join(changed)}): "
            "training afresh")
    return run, identity, classes, photos, settings, device, verified


def train(args):
    """Run the ``train`` command.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    status : int
        0.
    """
    times = {}
    run, identity, classes, photos, settings, device, verified = _prepare(args)
    paths = photos.paths
    started = time.monotonic()
    step(2, STEPS, f"Proposing candidate sets with {args.model} (cache in {run.cache})")
    annotation = _annotate(run, args, classes, paths, settings["teacher"], device)
    times["annotate"], started = time.monotonic() - started, time.monotonic()
    step(3, STEPS, f"Training Co-Reg (checkpoint in {run.checkpoint})")
    clf = _train_student(run, settings, device, classes, photos, annotation, verified)
    times["train"], started = time.monotonic() - started, time.monotonic()
    step(4, STEPS, "Saving the model, its class names and its ONNX export")
    run.write_json(run.classes_json, classes)
    export_onnx(clf, run.onnx)
    times["export"], started = time.monotonic() - started, time.monotonic()
    step(5, STEPS, "Writing the report")
    build_report(run, clf, paths, classes)
    times["report"] = time.monotonic() - started
    step(6, STEPS, "Writing the summary")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        student = clf.predict_proba([str(p) for p in paths])
    summary = write_summary(run, identity=identity, settings=settings, device=device,
                            student_proba=student, skipped=photos.skipped, times=times,
                            n_verified=len(verified))
    agreement = 100 * summary["result"]["agreement_with_teacher"]
    say(f"Done: the student agrees with the teacher on {agreement:.1f}% of the photos. "
        f"Open {run.report}; pick photos to check with: sklearn-npll verify {run.path}")
    return 0

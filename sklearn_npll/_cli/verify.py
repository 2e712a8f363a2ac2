"""``sklearn-npll verify``: a CSV of the training photos most worth
checking by hand, with an empty ``label`` column for the person's answer;
``train --verified`` reads it back."""

import csv
import warnings
from pathlib import Path

import numpy as np

from .console import say
from .run_folder import RunFolder

__all__ = ["verify", "rank_for_checking", "COLUMNS"]

COLUMNS = ["file", "student", "student_probability", "teacher", "teacher_probability",
           "candidates", "reason", "label"]


def rank_for_checking(student_proba, teacher_proba):
    """Order of the photos to check: those where the student and the
    teacher disagree first, then the others; by lowest student confidence
    within each group.

    Parameters
    ----------
    student_proba, teacher_proba : ndarray of shape (n_samples, n_classes)

    Returns
    -------
    order : ndarray of int
    disagree : ndarray of bool
    """
    disagree = student_proba.argmax(1) != teacher_proba.argmax(1)
    confidence = student_proba.max(1)
    order = np.lexsort((confidence, ~disagree))
    return order, disagree


def _labelled_rows(path):
    """Rows of an earlier CSV whose label a person filled in."""
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if (row.get("label") or "").strip()]


def _row(name, i, classes, student, teacher, candidates, disagree):
    s, t = student[i].argmax(), teacher[i].argmax()
    return {"file": name, "student": classes[s],
            "student_probability": f"{student[i, s]:.4f}", "teacher": classes[t],
            "teacher_probability": f"{teacher[i, t]:.4f}",
            "candidates": "|".join(c for c, y in zip(classes, candidates[i]) if y),
            "reason": "student and teacher disagree" if disagree[i] else "low confidence",
            "label": ""}


def verify(args):
    """Run the ``verify`` command.

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
    identity = run.identity()
    paths = run.image_paths()
    clf = run.load_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        student = clf.predict_proba([str(p) for p in paths])
    candidates, _, teacher = run.load_annotation()
    order, disagree = rank_for_checking(student, teacher)
    out = Path(args.out) if args.out else run.verify_csv
    kept = _labelled_rows(out)
    done = {row["file"] for row in kept}
    names, classes = identity["images"], identity["classes"]
    picked = [i for i in order if names[i] not in done][:args.n]
    rows = kept + [_row(names[i], i, classes, student, teacher, candidates, disagree)
                   for i in picked]
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    n_disagree = int(disagree[picked].sum()) if picked else 0
    say(f"Wrote {len(picked)} photos to check to {out} ({n_disagree} where the student and "
        f"the teacher disagree{f', {len(kept)} labelled earlier kept' if kept else ''}).")
    say("Open each photo (file is relative to the photo folder), write its class in the "
        "label column (leave it empty when unsure), then run train again with "
        f"--verified {out}")
    return 0

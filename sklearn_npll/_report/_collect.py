"""Gather what the report shows: the student's predictions on the training
images, the candidate sets and the teacher's probabilities."""

from dataclasses import dataclass

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .._data.candidates import check_candidates
from .._data.annotated import AnnotatedImages
from ..annotate import VLMPartialAnnotator


@dataclass
class ReportData:
    """Everything the figures need, with one row per training image."""

    model: object  # what the user passed: a classifier or a Pipeline
    student: object  # the fitted classifier
    teacher: object  # the annotator step of a Pipeline, or None
    images: object  # the images as given (for thumbnails)
    classes: np.ndarray  # the student's classes_
    names: list  # display name of each class
    student_proba: np.ndarray  # (n, C)
    candidates: np.ndarray = None  # (n, C) 0/1, or None
    teacher_proba: np.ndarray = None  # (n, C), or None

    @property
    def n(self):
        return self.student_proba.shape[0]

    @property
    def n_classes(self):
        return len(self.classes)

    @property
    def student_pred(self):
        return self.student_proba.argmax(1)

    @property
    def teacher_pred(self):
        return None if self.teacher_proba is None else self.teacher_proba.argmax(1)

    @property
    def history(self):
        return list(getattr(self.student, "history_", None) or [])


def collect(model, X, *, candidates=None, teacher_proba=None, class_names=None):
    """Predict on ``X`` and line up candidates and teacher probabilities.

    ``model`` is a fitted classifier or a fitted Pipeline whose last step is
    the classifier; the steps before it transform ``X`` (an annotator gives
    the candidate sets and, when ``teacher_proba`` is None, the teacher's
    probabilities).
    """
    check_is_fitted(model)
    teacher = None
    if isinstance(model, Pipeline):
        student = model[-1]
        Xt = model[:-1].transform(X) if len(model) > 1 else X
        first = model[0]
        if isinstance(first, VLMPartialAnnotator) and len(model) > 1:
            teacher = first
    else:
        student, Xt = model, X
    classes = np.asarray(student.classes_)
    student_proba = np.asarray(student.predict_proba(Xt), dtype=np.float64)
    n = student_proba.shape[0]
    if candidates is None and isinstance(Xt, AnnotatedImages):
        _check_same_classes(Xt.classes, classes)
        candidates = Xt.candidates
        if teacher_proba is None:
            teacher_proba = Xt.proba  # the annotator's averaged probabilities
    if candidates is not None:
        candidates, _ = check_candidates(candidates, n_samples=n, classes=classes)
    images = Xt.images if isinstance(Xt, AnnotatedImages) else X
    if isinstance(images, AnnotatedImages):
        images = images.images
    return ReportData(
        model=model, student=student, teacher=teacher, images=images, classes=classes,
        names=_names(class_names, classes), student_proba=student_proba,
        candidates=candidates, teacher_proba=_check_proba(teacher_proba, n, len(classes)))


def _check_same_classes(annotated, classes):
    if len(annotated) != len(classes) or not np.array_equal(
            np.asarray(annotated).astype(str), classes.astype(str)):
        raise ValueError(
            f"The candidate sets' classes {list(annotated)} differ from the classifier's "
            f"classes_ {list(classes)}; annotate with the classes the classifier was "
            "trained on, or pass candidates= in the classifier's column order.")


def _names(class_names, classes):
    if class_names is None:
        return [str(c) for c in classes]
    names = [str(c) for c in class_names]
    if len(names) != len(classes):
        raise ValueError(
            f"class_names has {len(names)} names but the classifier has {len(classes)} "
            f"classes ({list(classes)}); give one name per class, in the order of "
            "classes_.")
    return names


def _check_proba(proba, n, n_classes):
    if proba is None:
        return None
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n, n_classes):
        raise ValueError(
            f"teacher_proba must have shape ({n}, {n_classes}): one row per image of X "
            f"and one column per class of the classifier; got shape {proba.shape}.")
    if not np.isfinite(proba).all() or (proba < 0).any():
        raise ValueError("teacher_proba holds negative, NaN or infinite values; give "
                         "the teacher's class probabilities (rows summing to one).")
    return proba

"""Validation of the estimators' inputs: X (images, files, datasets or
feature matrices) and the candidate sets y, with scikit-learn's checks where
they apply and messages that name the culprit."""

import os
import warnings

import numpy as np
import torch
from sklearn.utils import assert_all_finite, column_or_1d
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from .._data.annotated import AnnotatedImages
from .._data.candidates import (check_candidates, column_order, holds_candidate_sets,
                                is_candidate_set_list)
from .._data.image_store import load_images
from .._data.inputs import InputData, as_input_data, is_pil_image

__all__ = ["check_X", "check_class_coverage", "check_given_classes",
           "check_partial_fit_classes", "check_targets", "check_training_data"]


def _is_array_like_matrix(X):
    """True for inputs that scikit-learn's validation should see: numeric
    array-likes that are not images, paths, PIL images or torch objects."""
    if isinstance(X, (torch.Tensor, torch.utils.data.Dataset, InputData, AnnotatedImages)):
        return False
    if hasattr(X, "tocsr") or hasattr(X, "iloc") or isinstance(X, np.ndarray):
        return np.ndim(X) == 2 if not hasattr(X, "tocsr") else True
    if isinstance(X, (list, tuple)) and len(X) and isinstance(X[0], (list, tuple, np.ndarray)):
        return np.ndim(X[0]) == 1
    return False


def _has_complex(X):
    """True for array-likes of complex numbers (which scikit-learn's
    validation reports by printing the whole array)."""
    if hasattr(X, "dtypes"):  # DataFrame
        return any(getattr(d, "kind", "") == "c" for d in X.dtypes)
    dtype = getattr(X, "dtype", None)
    return (np.asarray(X).dtype if dtype is None else np.dtype(dtype)).kind == "c"


def check_targets(y):
    """scikit-learn's checks of numeric targets (finite values, a column
    vector read as labels, no continuous labels) and the cases it lets
    through silently.

    Returns
    -------
    y : ndarray or list of sets
    columns : ndarray or None
        The column names of a DataFrame candidate matrix (its classes).
    """
    if is_candidate_set_list(y):
        return y, None
    columns = None
    if hasattr(y, "columns") and getattr(y, "ndim", 1) == 2 and y.shape[1] > 1:
        columns = np.asarray(y.columns)
    if hasattr(y, "toarray"):  # scipy sparse candidate matrix
        y = y.toarray()
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if y.dtype.kind in "fc":
        assert_all_finite(y, input_name="y")
    if y.ndim == 2 and y.shape[1] == 1:
        if y.dtype.kind in "biuf" and len(y) and np.isin(y, (0, 1)).all():
            raise ValueError(
                "y has a single column of 0/1 values. As a candidate matrix it holds one "
                f"class, and its {int((y == 0).sum())} row(s) of 0 have no candidate; a "
                "classifier needs at least 2 classes (one column each). If these are "
                "binary labels, pass them as a 1-D array: y.ravel().")
        y = column_or_1d(y, warn=True)
    if y.ndim == 1:
        check_classification_targets(y)
        if y.dtype.kind in "iu" and (y == -1).any() and (y == 0).any():
            warnings.warn(
                f"y holds the label -1 in {int((y == -1).sum())} row(s), next to label 0. "
                "It is read as a class named -1, not as 'unlabeled' (scikit-learn's "
                "semi-supervised convention). Give an unlabeled sample every class as "
                "candidates instead (a row of ones in a candidate matrix).", UserWarning)
    return y, columns


def _names(values):
    return [c.item() if isinstance(c, np.generic) else c for c in values]


def check_class_coverage(Y, classes):
    """A classifier needs two classes; a class in no candidate set cannot be
    learnt (warned, not refused: an annotator may find no image of it); a
    set of every class says nothing about its sample's label (warned)."""
    used = np.flatnonzero(Y.sum(axis=0) > 0)
    if len(used) < 2:
        raise ValueError(
            f"y holds a single class ({np.asarray(classes)[used[:1]].tolist()[0]!r}) among "
            "its candidate sets; a classifier needs at least 2 classes.")
    unused = np.flatnonzero(Y.sum(axis=0) == 0)
    if unused.size:
        warnings.warn(
            f"{unused.size} class(es) appear in no candidate set: "
            f"{_names(classes[unused][:5])}. No sample supports them: training lowers their "
            "probability, but a model trained briefly may still predict them. Drop their "
            "columns or add samples that hold them.", UserWarning)
    full = np.flatnonzero(Y.sum(axis=1) == Y.shape[1])
    if full.size:
        warnings.warn(
            f"{full.size} of {len(Y)} candidate set(s) hold every class (rows "
            f"{full[:5].tolist()}{', ...' if full.size > 5 else ''}): they say nothing about "
            "their sample's label. If these samples are meant as unlabeled, ignore this "
            "warning; if an annotator proposed the sets, it kept too many candidates (lower "
            "its k, or raise its ratio or threshold).", UserWarning)



def check_X(est, X, reset, on_bad_image="raise"):
    if isinstance(X, (list, tuple)) and len(X) == 0 or (
            isinstance(X, np.ndarray) and X.ndim == 1 and X.size == 0):
        raise ValueError("X is empty (0 samples); pass at least one sample.")
    first = X[0] if isinstance(X, (np.ndarray, list, tuple)) and len(X) else None
    # paths, PIL images and arrays of mixed sizes are not one numpy array:
    # np.ndim would fail on them
    if isinstance(X, (np.ndarray, list, tuple)) \
            and not isinstance(first, (str, os.PathLike, np.ndarray, torch.Tensor)) \
            and not is_pil_image(first) and np.ndim(X) == 1:
        raise ValueError(
            f"Expected 2D array, got 1D array instead: array of shape {np.shape(X)}. "
            "Reshape your data either using array.reshape(-1, 1) if your data has a "
            "single feature or array.reshape(1, -1) if it contains a single sample.")
    if _is_array_like_matrix(X):
        if _has_complex(X):
            raise ValueError("X holds complex numbers; pass real-valued features.")
        X = validate_data(est, X, reset=reset, dtype=np.float32)
        data = as_input_data(X)
    else:
        data = _load_images(est, X, reset, on_bad_image)
        if data.kind == "features":
            if reset:
                est.n_features_in_ = data.sample_shape[0]
            elif data.sample_shape[0] != est.n_features_in_:
                raise ValueError(
                    f"X has {data.sample_shape[0]} features, but {type(est).__name__} "
                    f"is expecting {est.n_features_in_} features as input.")
    if not reset and tuple(data.sample_shape) != tuple(est.sample_shape_):
        raise ValueError(
            f"Samples of X have shape {tuple(data.sample_shape)}, but the model was "
            f"fitted on samples of shape {tuple(est.sample_shape_)}.")
    return data

def _load_images(est, X, reset, on_bad_image):
    """Read X, decoding files, PIL images and datasets once into a store at
    the training size (``image_size_``, resolved at fit, applied later)."""
    if reset:
        size, mode = est.image_size, None
    else:
        size = None if est.image_size is None else getattr(est, "image_size_", None)
        channels = est.sample_shape_[0] if len(est.sample_shape_) == 3 else None
        mode = {1: "L", 3: "RGB"}.get(channels)
    data, resolved = load_images(X, size, mode=mode, memory_budget=est.memory_budget,
                                 num_workers=est.num_workers,
                                 verbose=est.verbose if reset else 0,
                                 on_bad_image=on_bad_image)
    if reset:
        est.image_size_ = resolved
    return data


def _rows_kept(y, data):
    """The rows of ``y`` of the samples ``data`` holds: all of them, or,
    when unreadable images were skipped, those ``data.source_mask`` marks."""
    kept = data.source_mask
    if kept is None:
        return y
    if len(y) != len(kept):
        raise ValueError(
            f"The candidate sets have {len(y)} rows but X has {len(kept)} samples; give one "
            "candidate set per sample.")
    if isinstance(y, np.ndarray):
        return y[kept]
    return [row for row, keep in zip(y, kept) if keep]


def check_partial_fit_classes(est, classes):
    """The ``classes`` argument of ``partial_fit``: None, or the class names,
    which a continued fit must repeat."""
    if classes is None:
        return None
    given = np.asarray(classes)
    if given.ndim != 1 or len(given) < 2:
        raise ValueError(f"classes must list at least 2 class names; got {classes!r}.")
    if est.initialized_ and hasattr(est, "classes_") \
            and given.tolist() != est.classes_.tolist():
        raise ValueError(
            f"classes={given.tolist()} is not the same as on the first call of partial_fit "
            f"({est.classes_.tolist()}): partial_fit continues one fit on fixed classes. "
            "Call fit, or partial_fit on a fresh estimator, to train on other classes.")
    return given


def check_given_classes(given, named):
    """Classes given to ``partial_fit``, checked against the names the
    candidate matrix's columns already carry (annotation, DataFrame)."""
    if named is not None and np.asarray(named).tolist() != given.tolist():
        raise ValueError(
            f"classes={given.tolist()} differs from the class names of y's columns "
            f"{np.asarray(named).tolist()}. Pass classes=None, or give y one column per "
            "class in the order of classes (a column of zeros for a class no sample holds).")
    return given


def check_training_data(est, X, y, reset=True, classes=None):
    """X as ``InputData``, y as a 0/1 candidate matrix, and the class names.

    ``classes`` are the names ``partial_fit`` was given (a fresh fit only):
    they name the matrix's columns, or the classes labels and sets refer to
    (a class no sample holds is kept, with a warning).
    """
    given, classes = classes, (None if reset else est.classes_)
    if isinstance(X, AnnotatedImages):
        classes = X.classes if classes is None else classes
        if y is None:
            y = X.candidates
        X = X.images
    if isinstance(X, (list, tuple)) and len(X) == 0:
        raise ValueError("X is empty (0 samples); fit needs at least 2 samples.")
    if y is None:
        raise ValueError(
            f"{type(est).__name__} requires y to be passed, but the target y is None. "
            "Pass candidate sets (an (n, C) 0/1 matrix, 1-D labels or a list of sets "
            "of class names), or the output of VLMPartialAnnotator.transform as X.")
    y, columns = check_targets(y)
    if classes is None and columns is not None:
        classes = columns
    elif columns is not None:  # named columns meet known classes: matched by name
        order = column_order(columns, classes)
        y = y if order is None else y[:, order]
    if reset and classes is not None and not holds_candidate_sets(y):
        # labels given next to an annotation: keep its class names when they fit
        classes = classes if np.isin(np.asarray(y), classes).all() else None
    if reset and given is not None:
        named = classes if holds_candidate_sets(y) and not is_candidate_set_list(y) else None
        classes = check_given_classes(given, named)
    if reset:
        for attr in ("n_features_in_", "feature_names_in_"):
            if hasattr(est, attr):
                delattr(est, attr)
    data = check_X(est, X, reset=reset, on_bad_image=getattr(est, "on_bad_image", "raise"))
    y = _rows_kept(y, data)
    if len(data) < 2:
        raise ValueError(
            f"{type(est).__name__} needs at least 2 samples to train (batch norm and "
            f"the mixture split need more than one); got {len(data)} sample.")
    Y, classes = check_candidates(y, n_samples=len(data), classes=classes)
    if reset and est._check_class_coverage:
        check_class_coverage(Y, classes)
    return data, Y, classes

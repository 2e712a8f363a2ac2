"""A training report a person can look at: one self-contained HTML file.

Needs matplotlib (``pip install "sklearn-npll[report]"``).
"""

import datetime
import os
from pathlib import Path

from ._report._collect import collect
from ._report._galleries import gallery_section
from ._report._header import header
from ._report._html import render
from ._report._plot import require_matplotlib
from ._report._sections import candidate_section, result_section, training_section

__all__ = ["write_report"]


def write_report(model, X, path, *, candidates=None, teacher_proba=None, class_names=None,
                 title=None, n_per_class=6, n_disputed=30, thumbnail_size=128):
    """Write an HTML report of a fitted classifier on its training images.

    The report is one self-contained file (figures and thumbnails embedded,
    no script, nothing fetched from a network) that any browser opens. It
    shows:

    - a header: the number of images and classes, the model and its main
      parameters, and a summary (agreement of student and teacher, share of
      predictions inside the candidate sets, mean set size, the estimated
      share of noisy sets);
    - the candidate sets: their sizes, how often each class is proposed, and
      the teacher's confidence;
    - the training, epoch by epoch: every loss term, the share of each class
      in Co-Reg's trusted split, and the covering rates;
    - the result: per class, how often the student (the classifier) agrees
      with the teacher (the vision-language model's top class), the matrix of
      where they disagree, and the student's confidence;
    - thumbnails: the student's most confident images per class, and the
      disputed images (student and teacher disagree), the ones most worth
      checking by hand.

    Parts that need what is missing (no teacher probabilities, no candidate
    sets, a classifier without Co-Reg's division, feature vectors instead of
    images) are left out with a line saying why. Every figure has a caption
    saying how to read it.

    Parameters
    ----------
    model : fitted classifier or fitted Pipeline
        A :class:`~sklearn_npll.CoRegClassifier`,
        :class:`~sklearn_npll.PRODENClassifier` or
        :class:`~sklearn_npll.CCClassifier`, or a ``Pipeline`` whose last step
        is one. For a Pipeline whose first step is a
        :class:`~sklearn_npll.VLMPartialAnnotator`, the candidate sets come
        from its ``transform`` of ``X`` and the teacher's probabilities from
        its ``predict_proba`` (the image embeddings are cached, so the images
        pass through the vision-language model at most once).
    X : images or AnnotatedImages
        The training images, in any form the model accepts (file paths,
        arrays, PIL images, a Dataset, or the annotator's output). The
        student predicts on them and the thumbnails are made from them.
    path : str or os.PathLike
        The HTML file to write (its folder must exist); overwritten.
    candidates : array-like of shape (n_samples, n_classes) or list of sets, default=None
        The candidate sets the classifier was trained on, columns in the order
        of its ``classes_`` (anything ``fit`` accepts as ``y``). Taken from
        ``X`` or the Pipeline's annotator when None.
    teacher_proba : array-like of shape (n_samples, n_classes), default=None
        The teacher's class probabilities for ``X``, columns in the order of
        ``classes_``. Taken from the Pipeline's annotator when None.
    class_names : list of str, default=None
        Names to show for the classes, in the order of ``classes_``; by
        default the classes themselves.
    title : str, default=None
        The page's title; by default the classifier and the number of images.
    n_per_class : int, default=6
        Thumbnails per class in the grid of most confident images.
    n_disputed : int, default=30
        Most disputed images shown.
    thumbnail_size : int, default=128
        Longest side of a thumbnail, in pixels.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    ImportError
        When matplotlib is not installed.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn_npll import CoRegClassifier, make_partial_labels
    >>> from sklearn_npll.report import write_report
    >>> rng = np.random.RandomState(0)
    >>> y = np.arange(40) % 2
    >>> X = rng.randint(0, 100, (40, 8, 8, 3)).astype("uint8")
    >>> X[y == 1] += 120
    >>> Y = make_partial_labels(y, partial_rate=0.3, noise_rate=0.1, random_state=0)
    >>> clf = CoRegClassifier(max_epochs=3, warmup_epochs=1, batch_size=16,
    ...                       random_state=0).fit(X, Y)
    >>> out = write_report(clf, X, os.path.join(tempfile.mkdtemp(), "report.html"),
    ...                    candidates=Y, class_names=["dark", "light"])
    >>> out.name
    'report.html'
    """
    require_matplotlib()
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"Cannot write the report to {os.fspath(path)!r}: the folder "
            f"{os.fspath(path.parent)!r} does not exist. Create it first.")
    data = collect(model, X, candidates=candidates, teacher_proba=teacher_proba,
                   class_names=class_names)
    sections = [candidate_section(data), training_section(data), result_section(data),
                gallery_section(data, per_class=n_per_class, n_disputed=n_disputed,
                                size=thumbnail_size)]
    from . import __version__

    footer = (f"Made by sklearn_npll {__version__} on "
              f"{datetime.datetime.now():%Y-%m-%d %H:%M}. Self-contained: every figure "
              "and thumbnail is embedded in this file.")
    path.write_text(render(header(data, title), sections, footer), encoding="utf-8")
    return path

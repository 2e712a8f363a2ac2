"""sklearn_npll: train image classifiers from noisy partial labels that a
vision-language model proposes, with Co-Reg, the scikit-learn way."""

from ._data.annotated import AnnotatedImages
from .annotate import SMALL_TEMPLATES, VLMPartialAnnotator
from .baselines import CCClassifier, DistillationClassifier, PRODENClassifier
from .coreg import CoRegClassifier
from .datasets import (
    AnnotatorPanel,
    candidate_stats,
    make_annotator_partial_labels,
    make_partial_labels,
    votes_to_candidates,
)
from .metrics import covering_rate, covering_rate_scorer

__all__ = [
    "AnnotatedImages",
    "AnnotatorPanel",
    "CCClassifier",
    "CoRegClassifier",
    "DistillationClassifier",
    "PRODENClassifier",
    "SMALL_TEMPLATES",
    "VLMPartialAnnotator",
    "candidate_stats",
    "covering_rate",
    "covering_rate_scorer",
    "make_annotator_partial_labels",
    "make_partial_labels",
    "votes_to_candidates",
]

__version__ = "0.1.0"

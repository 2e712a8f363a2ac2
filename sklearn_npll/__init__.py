"""sklearn_npll: train image classifiers from noisy partial labels that a
vision-language model proposes, with Co-Reg, the scikit-learn way."""

from ._inputs import AnnotatedImages
from .coreg import CoRegClassifier
from .datasets import candidate_stats, make_partial_labels, votes_to_candidates
from .metrics import covering_rate, covering_rate_scorer

__all__ = [
    "AnnotatedImages",
    "CoRegClassifier",
    "candidate_stats",
    "covering_rate",
    "covering_rate_scorer",
    "make_partial_labels",
    "votes_to_candidates",
]

__version__ = "0.1.0"

"""skorch callbacks for the partial-label estimators, grouped by kind as in
skorch: learning-rate schedules (:mod:`.lr`) and checkpoints
(:mod:`.checkpoint`)."""

from .checkpoint import CheckpointError, TrainingCheckpoint
from .lr import CosineLR

__all__ = ["CheckpointError", "CosineLR", "TrainingCheckpoint"]

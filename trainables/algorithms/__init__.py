"""Every trainable-level algorithm, by id."""

from __future__ import annotations

from trainables.algorithms.base import TrialAlgorithm
from trainables.algorithms.fixed import FixedHyperparameters
from trainables.algorithms.implicit import (
    ImplicitLR,
    ImplicitLRMomentum,
    ImplicitPerWeightLRMomentum,
)

__all__ = ["ALGORITHM_CLASSES", "TrialAlgorithm"]

ALGORITHM_CLASSES: dict[str, type[TrialAlgorithm]] = {
    cls.id: cls
    for cls in (
        FixedHyperparameters,
        ImplicitLR,
        ImplicitLRMomentum,
        ImplicitPerWeightLRMomentum,
    )
}

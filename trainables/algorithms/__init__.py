"""Every trainable-level algorithm, by id."""

from __future__ import annotations

from trainables.algorithms.base import TrialAlgorithm
from trainables.algorithms.baydin import HypergradientDescent
from trainables.algorithms.fixed import FixedHyperparameters
from trainables.algorithms.implicit import (
    ImplicitLR,
    ImplicitLRMomentum,
    ImplicitPerWeightLRMomentum,
)
from trainables.algorithms.lorraine import LorraineImplicit
from trainables.algorithms.stepped import SteppedLR
from trainables.algorithms.unrolled import (
    DiffThroughOptimisation,
    LongDiffThroughOptimisation,
)

__all__ = ["ALGORITHM_CLASSES", "TrialAlgorithm"]

ALGORITHM_CLASSES: dict[str, type[TrialAlgorithm]] = {
    cls.id: cls
    for cls in (
        FixedHyperparameters,
        SteppedLR,
        DiffThroughOptimisation,
        LongDiffThroughOptimisation,
        LorraineImplicit,
        HypergradientDescent,
        ImplicitLR,
        ImplicitLRMomentum,
        ImplicitPerWeightLRMomentum,
    )
}

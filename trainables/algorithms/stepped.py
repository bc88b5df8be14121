"""``random_stepped_lr``: fixed hyperparameters with a stepped lr decay.

As ``random``, except that after every hyperparameter step lr is multiplied by
a factor drawn once per trial, uniformly from ``hypergradient.stepped_lr_factor``
(default [0.98, 1.0]: over the 400 hyperparameter steps of the UCI budget, lr
ends between 3e-4 times and 1 times its initial value), from the trial's own
``ALGORITHM`` random stream, so it is the same in every study with the same
seed. lr is clipped to [1e-10, 1].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hposvc.hypergrad.hyperparameters import project_
from hposvc.seeding import Stream, stream_seed
from trainables.algorithms.fixed import FixedHyperparameters

__all__ = ["SteppedLR"]


class SteppedLR(FixedHyperparameters):
    """``random_stepped_lr``: lr times a per-trial factor each hyperparameter step.

    Attributes:
        lr_factor: The trial's factor.
    """

    id = "random_stepped_lr"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        factor_range = self.spec.hypergradient.stepped_lr_factor
        rng = np.random.default_rng(
            stream_seed(self.spec.seed, self.trial_index, Stream.ALGORITHM)
        )
        self.lr_factor = float(rng.uniform(factor_range.low, factor_range.high))

    def train_hyperparameter_step(self) -> None:
        super().train_hyperparameter_step()
        # In log10 units the multiplication is an exact shift, then a clip.
        with torch.no_grad():
            self.raw["log10_lr"].add_(math.log10(self.lr_factor))
        project_(self.raw)

    def hyperparameter_step(self) -> dict[str, float]:
        return super().hyperparameter_step() | {"lr_factor": self.lr_factor}

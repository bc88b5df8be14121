"""Fixed hyperparameters: the ``random`` baseline."""

from __future__ import annotations

from trainables.algorithms.base import TrialAlgorithm

__all__ = ["FixedHyperparameters"]


class FixedHyperparameters(TrialAlgorithm):
    """Plain SGD at the trial's initial hyperparameters, on training + validation."""

    id = "random"

    def train_hyperparameter_step(self) -> None:
        self.weight_steps(self.spec.budget.weight_steps, self.natural_hyperparameters())

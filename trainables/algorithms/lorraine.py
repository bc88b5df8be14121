"""``lorraine``: the implicit hypergradient of Lorraine et al. (2020).

Each hyperparameter step trains T plain SGD steps, then linearises the
fixed point of the regularised training gradient at the weights reached and
pushes the validation gradient through the Neumann series of
:func:`hposvc.hypergrad.lorraine.lorraine_hypergradient` (step size α = the
current lr); Adam takes one step on log10 weight decay.
"""

from __future__ import annotations

from hposvc.hypergrad.lorraine import lorraine_hypergradient
from trainables.algorithms.base import TrialAlgorithm

__all__ = ["LorraineImplicit"]


class LorraineImplicit(TrialAlgorithm):
    """``lorraine``: IFT + Neumann hypergradient of weight decay."""

    id = "lorraine"

    def train_hyperparameter_step(self) -> None:
        self.weight_steps(self.spec.budget.weight_steps, self.natural_hyperparameters())

        validation_gradient = self.problem.validation_gradient(self.params)
        hypergradient = lorraine_hypergradient(
            self.problem.loss,
            self.params,
            self.raw,
            validation_gradient,
            self.spec.hypergradient.neumann_terms,
            *self.problem.batch(),
        )
        self.apply_hypergradient(hypergradient)

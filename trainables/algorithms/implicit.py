"""The one-pass implicit hypergradient optimisers of Clarke et al. (ICLR 2022).

Each hyperparameter step runs T - 1 plain SGD steps, then takes the T-th step
through ``torch.func.vjp`` so that the update's vector–Jacobian products at
the weights before it are at hand; the validation gradient at the weights
after it is pushed through the Neumann series of
:func:`hposvc.hypergrad.neumann_hypergradient`, and Adam takes one step on
the unconstrained hyperparameters.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from hposvc.hypergrad import linearised_sgd_step, neumann_hypergradient
from trainables.algorithms.base import TrialAlgorithm

__all__ = [
    "ImplicitLR",
    "ImplicitLRMomentum",
    "ImplicitPerWeightLRMomentum",
]


class ImplicitLR(TrialAlgorithm):
    """``ours_lr``: tunes lr and weight decay; momentum stays at its initial value."""

    id = "ours_lr"

    def train_hyperparameter_step(self) -> None:
        steps = self.spec.budget.weight_steps
        self.weight_steps(steps - 1, self.natural_hyperparameters())

        # The T-th step is taken through the linearised update, so the Jacobians
        # at the weights before it are at hand for the Neumann series.
        step = linearised_sgd_step(
            self.problem.loss,
            self.params,
            self.buffers,
            self.raw,
            *self.problem.batch(),
        )
        self.params, self.buffers = step.params, step.buffers

        validation_gradient = self.problem.validation_gradient(self.params)
        hypergradient = neumann_hypergradient(
            step.weight_vjp,
            step.hyperparameter_vjp,
            validation_gradient,
            self.spec.hypergradient.neumann_terms,
        )
        self.apply_hypergradient(_detach(hypergradient))


class ImplicitLRMomentum(ImplicitLR):
    """``ours_lr_momentum``: tunes lr, weight decay and momentum."""

    id = "ours_lr_momentum"


class ImplicitPerWeightLRMomentum(ImplicitLR):
    """``ours_hdlr_momentum``: one lr per network weight, weight decay, momentum."""

    id = "ours_hdlr_momentum"
    per_weight_lr = True


def _detach(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _detach(value) for key, value in tree.items()}
    return tree.detach() if isinstance(tree, Tensor) else tree

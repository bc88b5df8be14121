"""Differentiating through optimisation: ``diff_through_opt`` and its long form.

Each hyperparameter step trains T weight steps, the last K of them through
:func:`hposvc.hypergrad.unrolled_hypergradient`, so the hypergradient is the
exact derivative of the validation loss through those K steps; Adam then takes
one step on the unconstrained hyperparameters. Memory grows with K only.

``long_diff_through_opt`` unrolls a whole short training episode (K = T) and,
after each hyperparameter update, starts the next episode again from the
trial's initial weights and zero momentum; its hyperparameter steps are the
episodes. The variants of Clarke et al. (2022) are settings of the spec (see
:data:`LONG_DIFF_THROUGH_OPT_VARIANTS`).
"""

from __future__ import annotations

from typing import Any

from hposvc.hypergrad import zeros_like
from hposvc.hypergrad.unrolled import unrolled_hypergradient
from trainables.algorithms.base import TrialAlgorithm

__all__ = [
    "LONG_DIFF_THROUGH_OPT_VARIANTS",
    "DiffThroughOptimisation",
    "LongDiffThroughOptimisation",
]

#: Spec overrides reproducing the paper's settings of ``long_diff_through_opt``:
#: episodes of ``weight_steps`` steps, ``hyperparameter_steps`` updates.
LONG_DIFF_THROUGH_OPT_VARIANTS: dict[str, dict[str, Any]] = {
    "uci": {
        "budget": {"weight_steps": 200, "hyperparameter_steps": 30},
        "hypergradient": {"unroll_steps": None, "restart_episodes": True},
    },
    "uci_full": {
        "budget": {"weight_steps": 4000, "hyperparameter_steps": 30},
        "hypergradient": {"unroll_steps": None, "restart_episodes": True},
    },
    "fashion_mnist": {
        "budget": {"weight_steps": 1000, "hyperparameter_steps": 50},
        "hypergradient": {"unroll_steps": None, "restart_episodes": True},
    },
    "medium": {
        "budget": {"weight_steps": 200, "hyperparameter_steps": 50},
        "hypergradient": {"unroll_steps": None, "restart_episodes": False},
    },
}


class DiffThroughOptimisation(TrialAlgorithm):
    """``diff_through_opt``: exact hypergradient through the last K weight steps."""

    id = "diff_through_opt"

    @property
    def unroll_steps(self) -> int:
        """K, never more than T (``None`` in the spec means all T)."""
        steps = self.spec.budget.weight_steps
        return min(self.spec.hypergradient.unroll_steps or steps, steps)

    def train_hyperparameter_step(self) -> None:
        unroll_steps = self.unroll_steps
        self.weight_steps(
            self.spec.budget.weight_steps - unroll_steps,
            self.natural_hyperparameters(),
        )

        # The last K steps are taken inside the differentiated map; their
        # batches are drawn first, in the order plain steps would draw them.
        batches = [self.problem.batch() for _ in range(unroll_steps)]
        unrolled = unrolled_hypergradient(
            self.problem.loss,
            self.problem.validation_loss,
            self.params,
            self.buffers,
            self.raw,
            batches,
        )
        self.params, self.buffers = unrolled.params, unrolled.buffers
        self.apply_hypergradient(unrolled.hypergradient)


class LongDiffThroughOptimisation(DiffThroughOptimisation):
    """``long_diff_through_opt``: whole episodes, restarted after each update.

    With ``hypergradient.restart_episodes`` false it is the "medium" variant:
    training continues across updates, looking back K steps each time.
    """

    id = "long_diff_through_opt"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.initial_params = {name: w.clone() for name, w in self.params.items()}

    def restart_episode(self) -> None:
        """Back to the trial's initial weights and zero momentum buffers."""
        self.params = {name: w.clone() for name, w in self.initial_params.items()}
        self.buffers = zeros_like(self.params)

    def train_hyperparameter_step(self) -> None:
        if self.spec.hypergradient.restart_episodes:
            self.restart_episode()
        super().train_hyperparameter_step()

    def state_dict(self) -> dict[str, Any]:
        initial = {name: w.detach().clone() for name, w in self.initial_params.items()}
        return super().state_dict() | {"initial_params": initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.initial_params = {
            name: w.detach().clone() for name, w in state["initial_params"].items()
        }

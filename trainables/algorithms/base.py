"""The contract every algorithm of a trial implements.

A :class:`TrialAlgorithm` owns one trial's training state — network weights,
momentum buffers, unconstrained hyperparameters and the hyperparameter
optimiser — and advances it by one *hyperparameter step* at a time: T weight
steps of SGD, then (for the hypergradient algorithms) one update of the
hyperparameters. It knows nothing of Ray; :mod:`trainables.trainable` wraps it.

What must survive a restart is exactly :meth:`state_dict`: restoring it into a
freshly built algorithm of the same trial and stepping on gives the same
numbers as never having stopped. No autograd graph outlives a call of
:meth:`hyperparameter_step`: everything kept is detached.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import torch

from hposvc.catalog import ALGORITHMS, AlgorithmInfo
from hposvc.hypergrad import (
    HyperparameterOptimiser,
    Params,
    SGDHyperparameters,
    constrain,
    describe,
    initial_raw,
    sgd_step,
    zeros_like,
)
from hposvc.seeding import InitialHyperparameters
from hposvc.spec import StudySpec
from trainables.problem import Problem

__all__ = ["TrialAlgorithm"]

logger = logging.getLogger(__name__)

#: The keys of the raw-hyperparameter pytree for each natural hyperparameter.
RAW_KEY = {
    "lr": "log10_lr",
    "weight_decay": "log10_weight_decay",
    "momentum": "logit_momentum",
}


class TrialAlgorithm:
    """One trial's training state and its hyperparameter step.

    Subclasses set :attr:`id` and implement :meth:`train_hyperparameter_step`.

    Args:
        problem: Network, data and losses of the trial.
        spec: The study's spec (budget and hypergradient settings).
        initial: The trial's initial hyperparameters.
        params: The network's initial weights (detached tensors).
        trial_name: Used in log lines.
        trial_index: The trial's index in its study; seeds the algorithm's own
            random choices (stream ``ALGORITHM`` of :mod:`hposvc.seeding`).
    """

    id: ClassVar[str]
    per_weight_lr: ClassVar[bool] = False

    def __init__(
        self,
        problem: Problem,
        *,
        spec: StudySpec,
        initial: InitialHyperparameters,
        params: Params,
        trial_name: str = "trial",
        trial_index: int = 0,
    ):
        self.problem = problem
        self.spec = spec
        self.trial_name = trial_name
        self.trial_index = trial_index
        self.params = params
        self.buffers = zeros_like(params)
        reference = next(iter(params.values()))
        self.raw = initial_raw(
            initial.lr,
            initial.weight_decay,
            initial.momentum,
            per_weight_like=params if self.per_weight_lr else None,
            dtype=reference.dtype,
            device=reference.device,
        )
        self.optimiser = HyperparameterOptimiser(
            self.raw,
            tuned=[RAW_KEY[name] for name in self.info.tuned],
            lr=spec.hypergradient.hyperparameter_lr,
        )
        self.hyperparameter_steps_done = 0
        self.skipped_updates = 0
        self.consecutive_skips = 0
        self._loss_gradient = torch.func.grad_and_value(problem.loss)

    @property
    def info(self) -> AlgorithmInfo:
        return ALGORITHMS[self.id]

    @classmethod
    def uses_validation_split(cls) -> bool:
        """Whether the validation rows are held out of training."""
        return ALGORITHMS[cls.id].uses_validation

    def train_hyperparameter_step(self) -> None:
        """T weight steps and, where the algorithm has one, a hyperparameter update."""
        raise NotImplementedError

    def hyperparameter_step(self) -> dict[str, float]:
        """Advance one hyperparameter step and report losses and hyperparameters."""
        self.train_hyperparameter_step()
        self.hyperparameter_steps_done += 1
        metrics = self.problem.evaluate(self.params) | describe(self.raw)
        metrics["weight_steps"] = (
            self.hyperparameter_steps_done * self.spec.budget.weight_steps
        )
        metrics["skipped_updates"] = self.skipped_updates
        metrics["consecutive_skips"] = self.consecutive_skips
        return metrics

    @property
    def diverged(self) -> bool:
        """Whether the weights have left the finite numbers."""
        return not all(bool(torch.isfinite(w).all()) for w in self.params.values())

    # Weight steps -------------------------------------------------------------

    def natural_hyperparameters(self) -> SGDHyperparameters:
        """The current hyperparameters, detached, for steps that need no graph."""
        with torch.no_grad():
            return constrain(self.raw)

    def weight_steps(self, count: int, hyperparameters: SGDHyperparameters) -> None:
        """``count`` plain SGD steps; nothing is kept for differentiation."""
        for _ in range(count):
            gradients = self.problem.gradient(self.params, *self.problem.batch())
            with torch.no_grad():
                self.params, self.buffers = sgd_step(
                    self.params, gradients, self.buffers, hyperparameters
                )

    def apply_hypergradient(self, hypergradient: dict[str, Any]) -> None:
        """One optimiser step on the hyperparameters, skipped if not finite."""
        self.count_hypergradient(applied=self.optimiser.step(hypergradient))

    def count_hypergradient(self, *, applied: bool) -> None:
        """Record whether a hypergradient update was applied or skipped (non-finite)."""
        if applied:
            self.consecutive_skips = 0
            return
        self.skipped_updates += 1
        self.consecutive_skips += 1
        logger.warning(
            "%s: non-finite hypergradient at hyperparameter step %d; update skipped"
            " (%d in a row)",
            self.trial_name,
            self.hyperparameter_steps_done + 1,
            self.consecutive_skips,
        )

    @property
    def skip_limit_reached(self) -> bool:
        """Whether ``max_consecutive_skips`` updates in a row were non-finite."""
        return self.consecutive_skips >= self.spec.hypergradient.max_consecutive_skips

    def divergence_reason(self, training_loss: float) -> str | None:
        """Why the trial must end as ``diverged`` now, or ``None`` if it need not.

        A non-finite training loss (or weights), or ``max_consecutive_skips``
        non-finite hypergradients in a row.
        """
        step = self.hyperparameter_steps_done
        if not math.isfinite(training_loss) or self.diverged:
            return f"non-finite training loss at hyperparameter step {step}"
        if self.skip_limit_reached:
            return (
                f"{self.consecutive_skips} non-finite hypergradients in a row"
                f" (the last at hyperparameter step {step})"
            )
        return None

    # Checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this trial exactly."""
        return {
            "algorithm": self.id,
            "params": _detached(self.params),
            "buffers": _detached(self.buffers),
            "raw": _detached(self.raw),
            "optimiser": self.optimiser.state_dict(),
            "hyperparameter_steps_done": self.hyperparameter_steps_done,
            "skipped_updates": self.skipped_updates,
            "consecutive_skips": self.consecutive_skips,
            "generator": self.problem.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["algorithm"] != self.id:
            raise ValueError(
                f"checkpoint is of algorithm {state['algorithm']!r}, not {self.id!r}"
            )
        self.params = _detached(state["params"])
        self.buffers = _detached(state["buffers"])
        _copy_into(self.raw, state["raw"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.hyperparameter_steps_done = int(state["hyperparameter_steps_done"])
        self.skipped_updates = int(state["skipped_updates"])
        self.consecutive_skips = int(state.get("consecutive_skips", 0))
        self.problem.generator.set_state(state["generator"].cpu())


def _detached(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _detached(value) for key, value in tree.items()}
    return tree.detach().clone()


@torch.no_grad()
def _copy_into(target: dict[str, Any], source: dict[str, Any]) -> None:
    # In place, so the optimiser keeps pointing at the same tensors.
    for key, value in source.items():
        if isinstance(value, dict):
            _copy_into(target[key], value)
        else:
            target[key].copy_(value)

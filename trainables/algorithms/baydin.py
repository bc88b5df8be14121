"""``baydin``: hypergradient descent on lr (Baydin et al., ICLR 2018).

Before every weight step, lr takes one plain SGD step (step size
``hypergradient.hyperparameter_lr``, 0.001 by default) along the dot product
of the current descent direction with the previous step, as in
:mod:`hposvc.hypergrad.baydin`; weight decay and momentum stay fixed. The rule
acts on lr itself, not on log10 lr (see that module for why); the new value is
stored back into the unconstrained pytree, so checkpoints and reports are as
for every other algorithm. Adam is not used. Only training gradients are
involved, so the algorithm trains on training + validation combined.
"""

from __future__ import annotations

import torch

from hposvc.hypergrad import SGDHyperparameters, sgd_step
from hposvc.hypergrad.baydin import hypergradient_descent_lr, lr_hypergradient
from trainables.algorithms.base import TrialAlgorithm

__all__ = ["HypergradientDescent"]


class HypergradientDescent(TrialAlgorithm):
    """``baydin``: lr adapted after every weight step from consecutive directions."""

    id = "baydin"

    def train_hyperparameter_step(self) -> None:
        for _ in range(self.spec.budget.weight_steps):
            self._weight_step_with_lr_update()

    def _weight_step_with_lr_update(self) -> None:
        _, weight_decay, momentum = self.natural_hyperparameters()
        lr = torch.pow(10.0, self.raw["log10_lr"].detach())
        gradients = self.problem.gradient(self.params, *self.problem.batch())

        # The buffer b_t is the direction of the step that led to these weights.
        with torch.no_grad():
            direction = {
                name: gradients[name] + weight_decay * w
                for name, w in self.params.items()
            }
            hypergradient = lr_hypergradient(direction, self.buffers)
        applied = bool(torch.isfinite(hypergradient))
        if applied:
            lr = hypergradient_descent_lr(
                lr,
                hypergradient,
                self.spec.hypergradient.hyperparameter_lr,
            )
            with torch.no_grad():
                self.raw["log10_lr"].copy_(torch.log10(lr))
        self.count_hypergradient(applied=applied)

        with torch.no_grad():
            self.params, self.buffers = sgd_step(
                self.params,
                gradients,
                self.buffers,
                SGDHyperparameters(lr, weight_decay, momentum),
            )

"""Hypergradient descent on the learning rate (Baydin et al., ICLR 2018).

For plain SGD, w_t = w_{t-1} - lr ∇f(w_{t-1}), the derivative of the next
loss with respect to the lr just used is ``-∇f(w_t)·∇f(w_{t-1})``, and
hypergradient descent takes one plain SGD step on lr with it before every
weight step::

    lr_t = lr_{t-1} + β ∇f(w_{t-1})·∇f(w_{t-2})

With momentum and weight decay the weights move by ``lr · b`` (the momentum
buffer, see :mod:`hposvc.hypergrad.sgd`), so ∂w_t/∂lr ≈ -b_t and the rule
becomes ``lr ← lr + β d_{t+1}·b_t``, with d the regularised gradient
``∇L_T(w) + weight_decay · w`` of the objective SGD descends; without
momentum b_t = d_t and it is Baydin's rule exactly.

Units. The rule acts on lr itself, not on log10 lr: β = 0.001 was chosen by
Baydin et al. for additive steps on lr, and the same step on log10 lr would be
scaled by ``lr · ln 10`` through the chain rule, a different (much slower at
small lr) algorithm. lr is then clipped into [1e-10, 1], which also keeps it
positive so its log10 stays finite.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from hposvc.spec import LOG10_LR_BOUNDS

__all__ = ["LR_BOUNDS", "hypergradient_descent_lr", "lr_hypergradient"]

#: lr is clipped into this interval after every update.
LR_BOUNDS = (10.0 ** LOG10_LR_BOUNDS[0], 10.0 ** LOG10_LR_BOUNDS[1])


def lr_hypergradient(
    direction: Mapping[str, Tensor], previous_step: Mapping[str, Tensor]
) -> Tensor:
    """∂f(w_t)/∂lr ≈ -d_{t+1}·b_t: the current descent direction against the last step.

    Args:
        direction: d_{t+1}, the regularised training gradient at the current
            weights.
        previous_step: b_t, the direction of the step that led to them (the
            momentum buffer; zero before the first step).
    """
    products = [torch.sum(direction[name] * previous_step[name]) for name in direction]
    return -torch.stack(products).sum()


def hypergradient_descent_lr(lr: Tensor, hypergradient: Tensor, beta: float) -> Tensor:
    """One plain SGD step on lr with step size β, clipped into :data:`LR_BOUNDS`."""
    return torch.clamp(lr - beta * hypergradient, *LR_BOUNDS)

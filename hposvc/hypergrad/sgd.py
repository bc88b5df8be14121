"""SGD with momentum and weight decay as one pure, differentiable function.

The step follows ``torch.optim.SGD`` (no dampening, no Nesterov)::

    d = g + weight_decay * w
    b = momentum * b + d          # b starts at zero, so the first b is d
    w = w - lr * b

Starting the momentum buffer at zero rather than at the first ``d`` (as
PyTorch does) gives the same numbers and keeps the step a single expression,
so ``torch.func`` can differentiate it with respect to the weights and to
every hyperparameter, and ``vmap`` can batch it over a population.

``lr`` is either one scalar tensor or a mapping holding one tensor per
parameter, shaped like it (one learning rate per network weight).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "Params",
    "SGDHyperparameters",
    "sgd_direction",
    "sgd_step",
    "sgd_update",
    "zeros_like",
]

Params = dict[str, Tensor]


class SGDHyperparameters(NamedTuple):
    """Hyperparameters of one SGD step, in their natural (constrained) units."""

    lr: Tensor | Mapping[str, Tensor]
    weight_decay: Tensor
    momentum: Tensor


def sgd_direction(
    params: Mapping[str, Tensor],
    gradients: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    weight_decay: Tensor,
    momentum: Tensor,
) -> Params:
    """The new momentum buffer ``momentum * b + g + weight_decay * w``."""
    return {
        name: momentum * buffers[name] + gradients[name] + weight_decay * weight
        for name, weight in params.items()
    }


def sgd_update(
    params: Mapping[str, Tensor],
    gradients: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    hyperparameters: SGDHyperparameters,
) -> tuple[Params, Params]:
    """The update u = lr * b that one SGD step subtracts, and the new buffers.

    This is the u(w, λ) of Clarke et al. (2022): the weights move to w - u.
    """
    lr, weight_decay, momentum = hyperparameters
    new_buffers = sgd_direction(params, gradients, buffers, weight_decay, momentum)
    update = {name: _lr_for(lr, name) * new_buffers[name] for name in params}
    return update, new_buffers


def sgd_step(
    params: Mapping[str, Tensor],
    gradients: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    hyperparameters: SGDHyperparameters,
) -> tuple[Params, Params]:
    """One SGD step; returns the new weights and the new momentum buffers.

    Pure: nothing is modified in place, so the result can be differentiated
    with respect to ``params`` and to every tensor in ``hyperparameters``.
    """
    update, new_buffers = sgd_update(params, gradients, buffers, hyperparameters)
    new_params = {name: weight - update[name] for name, weight in params.items()}
    return new_params, new_buffers


def _lr_for(lr: Tensor | Mapping[str, Tensor], name: str) -> Tensor:
    return lr[name] if isinstance(lr, Mapping) else lr


def zeros_like(params: Mapping[str, Tensor]) -> Params:
    """Zero momentum buffers for ``params``."""
    return {name: torch.zeros_like(weight) for name, weight in params.items()}

"""Implicit hypergradients through a weight update, by a truncated Neumann series.

Clarke, Oldewage and Hernández-Lobato (ICLR 2022). Let ``u(w, λ)`` be the
update one SGD step subtracts from the weights (the momentum buffer held
fixed). At a fixed point of training ``u(w*, λ) = 0``, so by the implicit
function theorem::

    dw*/dλ = -(∂u/∂w)^-1 ∂u/∂λ

and the hypergradient of the validation loss L_V is ``-g_Vᵀ (∂u/∂w)^-1 ∂u/∂λ``.
The inverse is replaced by the first ``i`` terms of its Neumann series::

    p = Σ_{j<i} (I - ∂u/∂w)^j g_V,      hypergradient = -pᵀ ∂u/∂λ

Each term is one vector–Jacobian product of ``u`` with respect to ``w`` (a
Hessian–vector product of the training loss, scaled by lr); one product with
respect to ``λ`` then gives the hypergradient. With ``i = 1`` this is exactly
the hypergradient of one unrolled SGD step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from hposvc.hypergrad.autodiff import (
    VJP,
    gradient,
    requiring_grad,
    vector_jacobian_product,
)
from hposvc.hypergrad.hyperparameters import RawHyperparameters, constrain
from hposvc.hypergrad.sgd import Params, sgd_update

__all__ = ["LinearisedStep", "linearised_sgd_step", "neumann_hypergradient"]

LossFn = Callable[..., Tensor]


class LinearisedStep(NamedTuple):
    """One SGD step taken together with the update's vector–Jacobian products.

    Attributes:
        params: Weights after the step (detached).
        buffers: Momentum buffers after the step (detached).
        loss: Training loss at the weights before the step.
        weight_vjp: ``v -> vᵀ ∂u/∂w`` at the weights before the step.
        hyperparameter_vjp: ``v -> vᵀ ∂u/∂λ``, a pytree shaped like ``raw``.
    """

    params: Params
    buffers: Params
    loss: Tensor
    weight_vjp: VJP
    hyperparameter_vjp: VJP


def linearised_sgd_step(
    loss_fn: LossFn,
    params: Params,
    buffers: Params,
    raw: RawHyperparameters,
    *batch: Tensor,
) -> LinearisedStep:
    """Take one SGD step on ``loss_fn(params, *batch)``, keeping its VJPs.

    The two Jacobians are linearised separately: ∂u/∂w at fixed λ (its VJP
    differentiates through the loss gradient, a Hessian–vector product) and
    ∂u/∂λ at fixed w, where the loss gradient is a constant. Splitting them
    keeps the Neumann terms from paying for λ-cotangents they do not use. Both
    are products with the same pure :func:`sgd_update`, taken by plain
    autograd (see :mod:`hposvc.hypergrad.autodiff` for why).
    """
    with torch.no_grad():
        fixed_hyperparameters = constrain(raw)

    # u(w) at fixed λ, with the loss gradient itself differentiable in w.
    weights = requiring_grad(params)
    gradients, loss = gradient(loss_fn, weights, *batch, create_graph=True)
    with torch.enable_grad():
        update, new_buffers = sgd_update(
            weights, gradients, buffers, fixed_hyperparameters
        )
    weight_vjp = vector_jacobian_product(update, weights)

    # u(λ) at fixed w: the gradient enters as a constant.
    start = {name: w.detach() for name, w in params.items()}
    constant_gradients = {name: g.detach() for name, g in gradients.items()}
    hyperparameters = requiring_grad(raw)
    with torch.enable_grad():
        update_of_hyperparameters, _ = sgd_update(
            start, constant_gradients, buffers, constrain(hyperparameters)
        )
    hyperparameter_vjp = vector_jacobian_product(
        update_of_hyperparameters, hyperparameters
    )

    return LinearisedStep(
        params={name: w - update[name].detach() for name, w in start.items()},
        buffers={name: b.detach() for name, b in new_buffers.items()},
        loss=loss.detach(),
        weight_vjp=weight_vjp,
        hyperparameter_vjp=hyperparameter_vjp,
    )


def neumann_hypergradient(
    weight_vjp: VJP,
    hyperparameter_vjp: VJP,
    validation_gradient: Mapping[str, Tensor],
    neumann_terms: int,
) -> Any:
    """The implicit hypergradient ``-pᵀ ∂u/∂λ``, with ``p`` a Neumann sum.

    Args:
        weight_vjp: ``v -> vᵀ ∂u/∂w`` at the weights where the last step was
            taken.
        hyperparameter_vjp: ``v -> vᵀ ∂u/∂λ`` at the same point.
        validation_gradient: g_V, the validation loss's gradient at the
            weights after that step.
        neumann_terms: i >= 1, the number of terms of the series.

    Returns:
        The hypergradient, a pytree shaped like λ.
    """
    if neumann_terms < 1:
        raise ValueError(f"neumann_terms must be >= 1, got {neumann_terms}")
    term = dict(validation_gradient)
    total = dict(validation_gradient)
    for _ in range(neumann_terms - 1):
        # The next term is the previous one times (I - ∂u/∂w), as a row vector.
        jacobian_term = weight_vjp(term)
        term = {name: term[name] - jacobian_term[name] for name in term}
        total = {name: total[name] + term[name] for name in total}
    return _negate(hyperparameter_vjp(total))


def _negate(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {key: _negate(value) for key, value in tree.items()}
    return -tree

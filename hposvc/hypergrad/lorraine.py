"""The implicit hypergradient of Lorraine, Vicol and Duvenaud (AISTATS 2020).

Lorraine et al. differentiate the fixed point of the training loss rather
than of an optimiser's update. With the L2-regularised training gradient::

    f(w, λ) = ∇L_T(w) + weight_decay · w

the weights at convergence satisfy f(w*, λ) = 0, so by the implicit function
theorem the validation loss L_V has the hypergradient::

    dL_V/dλ = -g_Vᵀ (∂f/∂w)^-1 ∂f/∂λ

and they approximate the inverse by ``α Σ_{j<i} (I - α ∂f/∂w)^j``, a Neumann
series with step size α (exact as i → ∞ when α ∂f/∂w has eigenvalues in
(0, 2)).

Scaling. We take α to be the trial's current learning rate. Then
``α Σ_j (I - α ∂f/∂w)^j ∂f/∂λ = Σ_j (I - ∂u/∂w)^j ∂u/∂λ`` with ``u = α f`` the
plain gradient-descent update, so the computation is exactly
:func:`hposvc.hypergrad.neumann_hypergradient` applied to u: the same series
and the same truncation as Clarke et al. (2022), which keeps the two methods
comparable term for term. The lr is the natural step size here because it is
the one at which training itself is stable, which is what makes the series
converge. Only weight decay is tuned, as in Lorraine et al.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from hposvc.hypergrad.autodiff import (
    gradient,
    requiring_grad,
    vector_jacobian_product,
)
from hposvc.hypergrad.hyperparameters import RawHyperparameters, constrain
from hposvc.hypergrad.implicit import neumann_hypergradient
from hposvc.hypergrad.sgd import Params

__all__ = ["lorraine_hypergradient"]

LossFn = Callable[..., Tensor]


def lorraine_hypergradient(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    raw: RawHyperparameters,
    validation_gradient: Mapping[str, Tensor],
    neumann_terms: int,
    *batch: Tensor,
) -> dict[str, Tensor]:
    """The weight-decay hypergradient of Lorraine et al. at the current weights.

    Args:
        loss_fn: ``loss_fn(params, *batch)``, the unregularised training loss.
        params: w, the weights at which the fixed point is linearised.
        raw: λ, the unconstrained hyperparameters; lr gives the series' step
            size α (a per-weight lr acts as a diagonal α).
        validation_gradient: g_V, the validation loss's gradient at ``params``.
        neumann_terms: i >= 1, the terms of the series.
        batch: The training rows of L_T.

    Returns:
        ``{"log10_weight_decay": dL_V/d log10 weight_decay}``.
    """
    with torch.no_grad():
        natural = constrain(raw)
    step_size, weight_decay = natural.lr, natural.weight_decay

    def scaled_regularised_gradient(
        w: Mapping[str, Tensor], decay: Tensor, gradients: Mapping[str, Tensor]
    ) -> Params:
        return {
            name: _step_for(step_size, name) * (gradients[name] + decay * weight)
            for name, weight in w.items()
        }

    # ∂(αf)/∂w at fixed λ: each vector–Jacobian product is an α-scaled
    # Hessian–vector product of the regularised training loss.
    weights = requiring_grad(params)
    gradients, _ = gradient(loss_fn, weights, *batch, create_graph=True)
    with torch.enable_grad():
        of_weights = scaled_regularised_gradient(weights, weight_decay, gradients)
    weight_vjp = vector_jacobian_product(of_weights, weights)

    # ∂(αf)/∂λ at fixed w: only the weight-decay term depends on λ.
    start = {name: w.detach() for name, w in params.items()}
    constant_gradients = {name: g.detach() for name, g in gradients.items()}
    decay = requiring_grad({"log10_weight_decay": raw["log10_weight_decay"]})
    with torch.enable_grad():
        of_decay = scaled_regularised_gradient(
            start, torch.pow(10.0, decay["log10_weight_decay"]), constant_gradients
        )
    decay_vjp = vector_jacobian_product(of_decay, decay)

    hypergradient = neumann_hypergradient(
        weight_vjp, decay_vjp, validation_gradient, neumann_terms
    )
    return {"log10_weight_decay": hypergradient["log10_weight_decay"].detach()}


def _step_for(step_size: Any, name: str) -> Tensor:
    return step_size[name] if isinstance(step_size, Mapping) else step_size

"""Exact hypergradients by differentiating through K unrolled SGD steps.

Starting from weights w_0 and momentum buffers b_0 (both held constant), K
SGD steps under hyperparameters λ give weights w_K(λ); the hypergradient is
the exact derivative of the validation loss there::

    w_k, b_k = sgd_step(w_{k-1}, ∇L_T(w_{k-1}; batch_k), b_{k-1}, λ)
    hypergradient = d L_V(w_K(λ)) / dλ

It is computed in reverse mode with ``torch.func.grad`` around the whole
unrolled map, the training-loss gradient of every step being itself a nested
``torch.func.grad``; so the graph holds the K steps and no more, and memory
grows with K, never with the length of training. λ is the unconstrained
pytree of :mod:`hposvc.hypergrad.hyperparameters`, so the result arrives in
the space where the hyperparameter optimiser works.

With K = 1 this is the one-term implicit hypergradient of
:func:`hposvc.hypergrad.neumann_hypergradient` from the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from hposvc.hypergrad.hyperparameters import RawHyperparameters, constrain
from hposvc.hypergrad.sgd import Params, sgd_step

__all__ = ["UnrolledHypergradient", "unrolled_hypergradient"]

LossFn = Callable[..., Tensor]
Batch = tuple[Tensor, ...]


class UnrolledHypergradient(NamedTuple):
    """The end of an unrolled stretch of training and its hypergradient.

    Attributes:
        params: Weights after the K steps (detached).
        buffers: Momentum buffers after the K steps (detached).
        validation_loss: L_V at those weights (detached).
        hypergradient: dL_V/dλ, a pytree shaped like the raw hyperparameters.
    """

    params: Params
    buffers: Params
    validation_loss: Tensor
    hypergradient: RawHyperparameters


def unrolled_hypergradient(
    loss_fn: LossFn,
    validation_loss_fn: Callable[[Params], Tensor],
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    raw: RawHyperparameters,
    batches: Sequence[Batch],
) -> UnrolledHypergradient:
    """Take ``len(batches)`` SGD steps and differentiate L_V through all of them.

    Args:
        loss_fn: ``loss_fn(params, *batch)``, the training loss.
        validation_loss_fn: ``validation_loss_fn(params)``, the loss whose
            hypergradient is wanted.
        params, buffers: w_0 and b_0, the state the unroll starts from.
        raw: λ, the unconstrained hyperparameters (not modified).
        batches: One training batch per unrolled step (K = its length >= 1).
    """
    if not batches:
        raise ValueError("unrolled_hypergradient needs at least one batch (K >= 1)")
    start_params = {name: w.detach() for name, w in params.items()}
    start_buffers = {name: b.detach() for name, b in buffers.items()}
    training_gradient = torch.func.grad(loss_fn)

    def validation_loss_after_unroll(
        hyperparameters: RawHyperparameters,
    ) -> tuple[Tensor, tuple[Params, Params, Tensor]]:
        natural = constrain(hyperparameters)
        weights, momentum_buffers = start_params, start_buffers
        for batch in batches:
            gradients = training_gradient(weights, *batch)
            weights, momentum_buffers = sgd_step(
                weights, gradients, momentum_buffers, natural
            )
        loss = validation_loss_fn(weights)
        return loss, (weights, momentum_buffers, loss)

    hypergradient, (weights, momentum_buffers, loss) = torch.func.grad(
        validation_loss_after_unroll, has_aux=True
    )(raw)
    return UnrolledHypergradient(
        params={name: w.detach() for name, w in weights.items()},
        buffers={name: b.detach() for name, b in momentum_buffers.items()},
        validation_loss=loss.detach(),
        hypergradient=_detached(hypergradient),
    )


def _detached(tree: Mapping[str, Any]) -> RawHyperparameters:
    return {
        key: _detached(value) if isinstance(value, Mapping) else value.detach()
        for key, value in tree.items()
    }

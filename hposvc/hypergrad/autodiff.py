"""Gradients and vector–Jacobian products of pure functions, by plain autograd.

The update of :mod:`hposvc.hypergrad.sgd` is one pure function, so its
derivatives can be taken by ``torch.func`` or by ordinary autograd on leaves
made to require grad; the numbers are the same. For the small networks a trial
trains, per-operation overhead dominates, and plain autograd is the cheaper of
the two: on UCI energy (8-50-1 MLP, full batch, one thread) a linearised SGD
step costs about 0.30 ms against 0.82 ms through ``torch.func.vjp``, and each
Neumann term 0.23 ms against 0.30 ms. ``torch.func`` stays the tool where a
whole map is differentiated (:mod:`hposvc.hypergrad.unrolled`).

Trees here are the pytrees of the package: mappings whose values are tensors
or mappings of tensors (the raw hyperparameters, with one lr per weight).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "VJP",
    "gradient",
    "leaves",
    "rebuild",
    "requiring_grad",
    "vector_jacobian_product",
]

#: ``v -> vᵀ J`` for a Jacobian J, a tree shaped like the inputs of J.
VJP = Callable[[Mapping[str, Tensor]], Any]


def leaves(tree: Mapping[str, Any]) -> Iterator[Tensor]:
    """The tensors of ``tree``, depth first, in insertion order."""
    for value in tree.values():
        if isinstance(value, Mapping):
            yield from leaves(value)
        else:
            yield value


def rebuild(tree: Mapping[str, Any], values: Sequence[Tensor]) -> dict[str, Any]:
    """A tree shaped like ``tree`` holding ``values`` in :func:`leaves` order."""
    remaining = iter(values)

    def fill(node: Mapping[str, Any]) -> dict[str, Any]:
        return {
            key: fill(value) if isinstance(value, Mapping) else next(remaining)
            for key, value in node.items()
        }

    return fill(tree)


def requiring_grad(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Detached copies of the leaves of ``tree`` that require grad (new leaves)."""
    return rebuild(tree, [leaf.detach().requires_grad_() for leaf in leaves(tree)])


def gradient(
    loss_fn: Callable[..., Tensor],
    params: Mapping[str, Tensor],
    *batch: Tensor,
    create_graph: bool = False,
) -> tuple[dict[str, Tensor], Tensor]:
    """``∇ loss_fn(params, *batch)`` with respect to ``params``, and the loss.

    With ``create_graph`` the gradient stays differentiable with respect to
    ``params`` themselves (which must then require grad); otherwise both are
    detached and no graph outlives the call.
    """
    weights = params if create_graph else requiring_grad(params)
    with torch.enable_grad():
        loss = loss_fn(weights, *batch)
        gradients = torch.autograd.grad(
            loss, list(weights.values()), create_graph=create_graph
        )
    if not create_graph:
        loss = loss.detach()
    return dict(zip(weights, gradients, strict=True)), loss


def vector_jacobian_product(
    outputs: Mapping[str, Tensor], inputs: Mapping[str, Any]
) -> VJP:
    """``v -> vᵀ ∂outputs/∂inputs``, reusing the graph already recorded.

    ``v`` is shaped like ``outputs``; the product is a tree shaped like
    ``inputs`` (zeros where an input does not reach the outputs). The graph
    stays alive while the returned function does.
    """
    output_list = list(outputs.values())
    input_list = list(leaves(inputs))

    def product(vector: Mapping[str, Tensor]) -> dict[str, Any]:
        products = torch.autograd.grad(
            output_list,
            input_list,
            grad_outputs=[vector[name] for name in outputs],
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        return rebuild(inputs, products)

    return product

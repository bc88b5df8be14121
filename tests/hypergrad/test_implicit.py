"""Tests of hposvc.hypergrad.implicit against independent references.

Every reference here is built without the library's update: the SGD update
u(w, λ) = lr * (momentum * b + g + weight_decay * w) and the map from the
unconstrained hyperparameters to natural ones are written out by hand, and
derivatives come from closed forms, explicit Jacobians, plain autograd or
finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import pytest
import torch

from hposvc.hypergrad import linearised_sgd_step, neumann_hypergradient

DTYPE = torch.float64
LAYER_SIZES = (3, 4, 1)
LN10 = math.log(10.0)

Tree = dict[str, Any]


# A tiny tanh network (smooth, so finite differences are clean) -------------


def _network_params(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    params = {}
    for index, (fan_in, fan_out) in enumerate(pairwise(LAYER_SIZES)):
        params[f"weight{index}"] = torch.randn(
            fan_out, fan_in, generator=generator, dtype=DTYPE
        )
        params[f"bias{index}"] = torch.randn(fan_out, generator=generator, dtype=DTYPE)
    return params


def _network_loss(
    params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    hidden = torch.tanh(x @ params["weight0"].T + params["bias0"])
    prediction = hidden @ params["weight1"].T + params["bias1"]
    return ((prediction - y) ** 2).mean()


def _data(seed: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, LAYER_SIZES[0], generator=generator, dtype=DTYPE)
    y = torch.randn(rows, LAYER_SIZES[-1], generator=generator, dtype=DTYPE)
    return x, y


TRAIN = _data(1, 8)
VALIDATION = _data(2, 6)


def _buffers(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        name: torch.randn(w.shape, generator=generator, dtype=DTYPE)
        for name, w in params.items()
    }


def _raw(params: Mapping[str, torch.Tensor], lr: str) -> Tree:
    """Unconstrained hyperparameters; ``lr`` is "scalar", "per-weight" or "equal"."""
    log10_lr: torch.Tensor | dict[str, torch.Tensor]
    if lr == "scalar":
        log10_lr = torch.tensor(-1.3, dtype=DTYPE)
    elif lr == "equal":
        log10_lr = {name: torch.full_like(w, -1.3) for name, w in params.items()}
    else:
        generator = torch.Generator().manual_seed(4)
        log10_lr = {
            name: -1.3 + 0.2 * torch.randn(w.shape, generator=generator, dtype=DTYPE)
            for name, w in params.items()
        }
    return {
        "log10_lr": log10_lr,
        "log10_weight_decay": torch.tensor(-1.7, dtype=DTYPE),
        "logit_momentum": torch.tensor(0.8, dtype=DTYPE),
    }


# References written out by hand -------------------------------------------


def _natural(raw: Tree) -> tuple[Any, torch.Tensor, torch.Tensor]:
    def power_of_ten(x: torch.Tensor) -> torch.Tensor:
        return torch.exp(LN10 * x)

    log10_lr = raw["log10_lr"]
    if isinstance(log10_lr, dict):
        lr: Any = {name: power_of_ten(x) for name, x in log10_lr.items()}
    else:
        lr = power_of_ten(log10_lr)
    weight_decay = power_of_ten(raw["log10_weight_decay"])
    momentum = 1.0 / (1.0 + torch.exp(-raw["logit_momentum"]))
    return lr, weight_decay, momentum


def _reference_update(
    params: Mapping[str, torch.Tensor],
    gradients: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    raw: Tree,
) -> dict[str, torch.Tensor]:
    lr, weight_decay, momentum = _natural(raw)
    update = {}
    for name, w in params.items():
        lr_of_w = lr[name] if isinstance(lr, dict) else lr
        direction = momentum * buffers[name] + gradients[name] + weight_decay * w
        update[name] = lr_of_w * direction
    return update


def _training_gradients(
    params: Mapping[str, torch.Tensor], *, create_graph: bool = False
) -> dict[str, torch.Tensor]:
    if not create_graph:
        params = {name: w.detach().requires_grad_() for name, w in params.items()}
    loss = _network_loss(params, *TRAIN)
    gradients = torch.autograd.grad(
        loss, list(params.values()), create_graph=create_graph
    )
    return dict(zip(params, gradients, strict=True))


def _validation_gradient(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    weights = {name: w.detach().requires_grad_() for name, w in params.items()}
    loss = _network_loss(weights, *VALIDATION)
    gradients = torch.autograd.grad(loss, list(weights.values()))
    return dict(zip(weights, gradients, strict=True))


# Flattening in a fixed, explicit order ---------------------------------------


def _raw_leaves(raw: Tree) -> list[torch.Tensor]:
    log10_lr = raw["log10_lr"]
    lr_leaves = list(log10_lr.values()) if isinstance(log10_lr, dict) else [log10_lr]
    return [*lr_leaves, raw["log10_weight_decay"], raw["logit_momentum"]]


def _flatten(leaves: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([leaf.reshape(-1) for leaf in leaves])


def _unflatten_like(
    flat: torch.Tensor, leaves: list[torch.Tensor]
) -> list[torch.Tensor]:
    pieces, start = [], 0
    for leaf in leaves:
        pieces.append(flat[start : start + leaf.numel()].reshape(leaf.shape))
        start += leaf.numel()
    return pieces


def _raw_from_leaves(leaves: list[torch.Tensor], like: Tree) -> Tree:
    *lr_leaves, log10_weight_decay, logit_momentum = leaves
    log10_lr: Any = (
        dict(zip(like["log10_lr"], lr_leaves, strict=True))
        if isinstance(like["log10_lr"], dict)
        else lr_leaves[0]
    )
    return {
        "log10_lr": log10_lr,
        "log10_weight_decay": log10_weight_decay,
        "logit_momentum": logit_momentum,
    }


def _params_from_flat(
    flat: torch.Tensor, like: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    return dict(zip(like, _unflatten_like(flat, list(like.values())), strict=True))


def _one_term_hypergradient(
    params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], raw: Tree
) -> Tree:
    step = linearised_sgd_step(_network_loss, params, buffers, raw, *TRAIN)
    return neumann_hypergradient(
        step.weight_vjp,
        step.hyperparameter_vjp,
        _validation_gradient(step.params),
        neumann_terms=1,
    )


LR_CASES = [
    pytest.param("scalar", id="scalar-lr"),
    pytest.param("per-weight", id="per-weight-lr"),
]


# The closed form on a quadratic ---------------------------------------------


def _quadratic_loss(
    params: Mapping[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    w = params["w"]
    return 0.5 * w @ a @ w - b @ w


def test_neumann_hypergradient_quadratic_converges_to_implicit_function_theorem() -> (
    None
):
    generator = torch.Generator().manual_seed(5)
    dim = 5
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=DTYPE))
    a = q @ torch.diag(torch.linspace(1.0, 2.0, dim, dtype=DTYPE)) @ q.T
    b = torch.randn(dim, generator=generator, dtype=DTYPE)
    c = torch.randn(dim, generator=generator, dtype=DTYPE)
    weight_decay, lr = 0.1, 0.1 / 1.1
    hessian = a + weight_decay * torch.eye(dim, dtype=DTYPE)
    contraction = torch.eye(dim, dtype=DTYPE) - lr * hessian
    assert float(torch.linalg.matrix_norm(contraction, ord=2)) <= 0.9 + 1e-12

    # At w* = (A + wd I)^-1 b, dw*/dwd = -(A + wd I)^-1 w*, so with
    # g_V = w* - c: dL_V/dwd = -g_Vᵀ (A + wd I)^-1 w*; w* does not depend on lr.
    w_star = torch.linalg.solve(hessian, b)
    validation_gradient = w_star - c
    expected_weight_decay = -validation_gradient @ torch.linalg.solve(hessian, w_star)
    expected = float(expected_weight_decay) * weight_decay * LN10

    raw = {
        "log10_lr": torch.tensor(math.log10(lr), dtype=DTYPE),
        "log10_weight_decay": torch.tensor(math.log10(weight_decay), dtype=DTYPE),
        "logit_momentum": torch.tensor(0.0, dtype=DTYPE),
    }
    zero_buffers = {"w": torch.zeros(dim, dtype=DTYPE)}
    step = linearised_sgd_step(_quadratic_loss, {"w": w_star}, zero_buffers, raw, a, b)
    torch.testing.assert_close(step.params["w"], w_star, rtol=0, atol=1e-12)

    errors = []
    for neumann_terms in (1, 2, 5, 10, 20, 50, 100, 200):
        hypergradient = neumann_hypergradient(
            step.weight_vjp,
            step.hyperparameter_vjp,
            {"w": step.params["w"] - c},
            neumann_terms,
        )
        errors.append(abs(float(hypergradient["log10_weight_decay"]) - expected))
        assert abs(float(hypergradient["log10_lr"])) < 1e-10
        # The momentum buffer is zero, so momentum has no effect on the update.
        assert abs(float(hypergradient["logit_momentum"])) < 1e-10

    assert all(later < earlier for earlier, later in pairwise(errors)), errors
    assert errors[0] > 1e-2, errors
    assert errors[-1] < 1e-6, errors


# One term is the one-step unrolled hypergradient ----------------------------


@pytest.mark.parametrize("lr", LR_CASES)
def test_neumann_hypergradient_one_term_equals_unrolled_step(lr: str) -> None:
    params = _network_params()
    buffers = _buffers(params)
    raw = _raw(params, lr)

    leaves = [leaf.clone().requires_grad_() for leaf in _raw_leaves(raw)]
    raw_leaves = _raw_from_leaves(leaves, raw)
    gradients = _training_gradients(params)
    update = _reference_update(params, gradients, buffers, raw_leaves)
    unrolled = {name: w - update[name] for name, w in params.items()}
    _network_loss(unrolled, *VALIDATION).backward()

    step = linearised_sgd_step(_network_loss, params, buffers, raw, *TRAIN)
    for name, w in unrolled.items():
        torch.testing.assert_close(step.params[name], w.detach(), rtol=0, atol=1e-12)
    hypergradient = neumann_hypergradient(
        step.weight_vjp,
        step.hyperparameter_vjp,
        _validation_gradient(step.params),
        neumann_terms=1,
    )
    for ours, reference in zip(_raw_leaves(hypergradient), leaves, strict=True):
        assert reference.grad is not None
        torch.testing.assert_close(ours, reference.grad, rtol=0, atol=1e-10)


# The VJPs against explicit Jacobians ----------------------------------------


@pytest.mark.parametrize("lr", LR_CASES)
def test_linearised_sgd_step_weight_vjp_matches_explicit_jacobian(lr: str) -> None:
    params = _network_params()
    buffers = _buffers(params)
    raw = _raw(params, lr)

    def update_of_flat_weights(flat: torch.Tensor) -> torch.Tensor:
        weights = _params_from_flat(flat, params)
        gradients = _training_gradients(weights, create_graph=True)
        update = _reference_update(weights, gradients, buffers, raw)
        return _flatten(list(update.values()))

    flat_params = _flatten(list(params.values()))
    jacobian = torch.autograd.functional.jacobian(update_of_flat_weights, flat_params)

    step = linearised_sgd_step(_network_loss, params, buffers, raw, *TRAIN)
    generator = torch.Generator().manual_seed(6)
    for _ in range(3):
        vector = torch.randn(flat_params.shape, generator=generator, dtype=DTYPE)
        ours = step.weight_vjp(_params_from_flat(vector, params))
        assert list(ours) == list(params)
        torch.testing.assert_close(
            _flatten(list(ours.values())), vector @ jacobian, rtol=0, atol=1e-10
        )


@pytest.mark.parametrize("lr", LR_CASES)
def test_linearised_sgd_step_hyperparameter_vjp_matches_explicit_jacobian(
    lr: str,
) -> None:
    params = _network_params()
    buffers = _buffers(params)
    raw = _raw(params, lr)
    gradients = _training_gradients(params)
    raw_leaves = _raw_leaves(raw)

    def update_of_flat_raw(flat: torch.Tensor) -> torch.Tensor:
        hyper = _raw_from_leaves(_unflatten_like(flat, raw_leaves), raw)
        update = _reference_update(params, gradients, buffers, hyper)
        return _flatten(list(update.values()))

    jacobian = torch.autograd.functional.jacobian(
        update_of_flat_raw, _flatten(raw_leaves)
    )

    step = linearised_sgd_step(_network_loss, params, buffers, raw, *TRAIN)
    generator = torch.Generator().manual_seed(7)
    for _ in range(3):
        vector = torch.randn(jacobian.shape[0], generator=generator, dtype=DTYPE)
        ours = step.hyperparameter_vjp(_params_from_flat(vector, params))
        assert set(ours) == set(raw)
        torch.testing.assert_close(
            _flatten(_raw_leaves(ours)), vector @ jacobian, rtol=0, atol=1e-10
        )


# Finite differences ---------------------------------------------------------


@pytest.mark.parametrize("lr", LR_CASES)
def test_neumann_hypergradient_one_term_matches_finite_differences(lr: str) -> None:
    params = _network_params()
    buffers = _buffers(params)
    raw = _raw(params, lr)
    gradients = _training_gradients(params)
    raw_leaves = _raw_leaves(raw)
    flat_raw = _flatten(raw_leaves)

    def validation_loss_after_step(flat: torch.Tensor) -> float:
        hyper = _raw_from_leaves(_unflatten_like(flat, raw_leaves), raw)
        update = _reference_update(params, gradients, buffers, hyper)
        weights = {name: w - update[name] for name, w in params.items()}
        return float(_network_loss(weights, *VALIDATION))

    h = 1e-6
    finite_differences = torch.zeros_like(flat_raw)
    for index in range(flat_raw.numel()):
        shift = torch.zeros_like(flat_raw)
        shift[index] = h
        finite_differences[index] = (
            validation_loss_after_step(flat_raw + shift)
            - validation_loss_after_step(flat_raw - shift)
        ) / (2 * h)

    hypergradient = _one_term_hypergradient(params, buffers, raw)
    ours = _flatten(_raw_leaves(hypergradient))
    assert bool((finite_differences.abs() > 1e-4).all()), finite_differences
    torch.testing.assert_close(ours, finite_differences, rtol=1e-5, atol=0)


# Per-weight learning rates --------------------------------------------------


@pytest.mark.parametrize("neumann_terms", [1, 4], ids=["one-term", "four-terms"])
def test_neumann_hypergradient_equal_per_weight_lr_sums_to_scalar(
    neumann_terms: int,
) -> None:
    params = _network_params()
    buffers = _buffers(params)

    def hypergradient(raw: Tree) -> Tree:
        step = linearised_sgd_step(_network_loss, params, buffers, raw, *TRAIN)
        return neumann_hypergradient(
            step.weight_vjp,
            step.hyperparameter_vjp,
            _validation_gradient(step.params),
            neumann_terms,
        )

    scalar = hypergradient(_raw(params, "scalar"))
    per_weight = hypergradient(_raw(params, "equal"))

    assert isinstance(per_weight["log10_lr"], dict)
    assert {name: g.shape for name, g in per_weight["log10_lr"].items()} == {
        name: w.shape for name, w in params.items()
    }
    total = sum(g.sum() for g in per_weight["log10_lr"].values())
    torch.testing.assert_close(total, scalar["log10_lr"], rtol=0, atol=1e-10)
    for key in ("log10_weight_decay", "logit_momentum"):
        torch.testing.assert_close(per_weight[key], scalar[key], rtol=0, atol=1e-10)


# Input validation -----------------------------------------------------------


@pytest.mark.parametrize("neumann_terms", [0, -1], ids=["zero", "negative"])
def test_neumann_hypergradient_fewer_than_one_term_raises(neumann_terms: int) -> None:
    params = _network_params()
    step = linearised_sgd_step(
        _network_loss, params, _buffers(params), _raw(params, "scalar"), *TRAIN
    )
    with pytest.raises(
        ValueError, match=f"^neumann_terms must be >= 1, got {neumann_terms}$"
    ):
        neumann_hypergradient(
            step.weight_vjp,
            step.hyperparameter_vjp,
            _validation_gradient(step.params),
            neumann_terms,
        )

"""Tests of hypergradient descent (Baydin et al. 2018) against its analytic rule.

The problem is linear least squares, whose gradients are known in closed form
(∇ = (2/n) Xᵀ (X w + b - y) for the MSE), so the reference below computes the
rule lr ← lr + β d_{t+1}·b_t and the SGD recursion with no autograd at all.
"""

from __future__ import annotations

import math

import pytest
import torch

from hposvc.data import Dataset
from hposvc.hypergrad.baydin import (
    LR_BOUNDS,
    hypergradient_descent_lr,
    lr_hypergradient,
)
from hposvc.models import build_model
from hposvc.seeding import InitialHyperparameters
from hposvc.spec import StudySpec
from trainables.algorithms.baydin import HypergradientDescent
from trainables.problem import Problem

DTYPE = torch.float64
INPUTS = 3
BETA = 0.001


def test_lr_hypergradient_is_minus_the_dot_product_of_consecutive_gradients() -> None:
    current = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor(3.0)}
    previous = {"a": torch.tensor([0.5, -1.0]), "b": torch.tensor(2.0)}
    # -(1·0.5 + 2·(-1) + 3·2) = -4.5
    assert float(lr_hypergradient(current, previous)) == pytest.approx(-4.5)


@pytest.mark.parametrize(
    ("lr", "hypergradient", "expected"),
    [(0.1, -20.0, 0.12), (0.1, 50.0, 0.05), (0.1, 1e6, LR_BOUNDS[0]), (0.9, -1e6, 1.0)],
    ids=["increase", "decrease", "clipped-low", "clipped-high"],
)
def test_hypergradient_descent_lr_steps_and_clips(
    lr: float, hypergradient: float, expected: float
) -> None:
    new_lr = hypergradient_descent_lr(
        torch.tensor(lr, dtype=DTYPE), torch.tensor(hypergradient, dtype=DTYPE), BETA
    )
    assert float(new_lr) == pytest.approx(expected, rel=1e-12)


def _linear_problem() -> tuple[Problem, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)

    def rows(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(count, INPUTS, generator=generator, dtype=DTYPE)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=DTYPE) + 0.3
        return x, y

    (train_x, train_y), (validation_x, validation_y), (test_x, test_y) = (
        rows(20),
        rows(5),
        rows(5),
    )
    dataset = Dataset(
        "uci_energy",
        train_x,
        train_y,
        validation_x,
        validation_y,
        test_x,
        test_y,
        target_mean=0.0,
        target_std=1.0,
    )
    model = build_model([INPUTS, 1], seed=1, dtype=DTYPE)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    problem = Problem(
        dataset,
        model,
        uses_validation=False,
        batch_size=None,
        generator=torch.Generator().manual_seed(2),
    )
    return problem, params


@pytest.mark.parametrize("momentum", [0.0, 0.7], ids=["sgd", "momentum"])
def test_baydin_follows_the_analytic_rule_on_least_squares(momentum: float) -> None:
    lr, weight_decay, hyperparameter_steps, weight_steps = 0.02, 1e-3, 3, 4
    problem, params = _linear_problem()
    spec = StudySpec.model_validate(
        {
            "dataset": "uci_energy",
            "algorithm": "baydin",
            "budget": {
                "hyperparameter_steps": hyperparameter_steps,
                "weight_steps": weight_steps,
            },
            "hypergradient": {"hyperparameter_lr": BETA},
        }
    )
    algorithm = HypergradientDescent(
        problem,
        spec=spec,
        initial=InitialHyperparameters(lr, weight_decay, momentum),
        params={name: p.clone() for name, p in params.items()},
    )
    reported = [algorithm.hyperparameter_step()["lr"] for _ in range(3)]

    # The reference: closed-form least-squares gradients, the rule by hand.
    momentum = min(max(momentum, 1e-6), 1 - 1e-6)
    x, y = problem.train_x, problem.train_y
    w, b = params["layers.0.weight"].clone(), params["layers.0.bias"].clone()
    step_w, step_b = torch.zeros_like(w), torch.zeros_like(b)
    expected = []
    for _ in range(hyperparameter_steps):
        for _ in range(weight_steps):
            residual = x @ w.T + b - y
            direction_w = 2 * residual.T @ x / x.shape[0] + weight_decay * w
            direction_b = 2 * residual.sum(0) / x.shape[0] + weight_decay * b
            dot = float((direction_w * step_w).sum() + (direction_b * step_b).sum())
            lr = min(max(lr + BETA * dot, 1e-10), 1.0)
            step_w = momentum * step_w + direction_w
            step_b = momentum * step_b + direction_b
            w, b = w - lr * step_w, b - lr * step_b
        expected.append(lr)

    assert reported == pytest.approx(expected, rel=1e-9)
    assert reported[0] != pytest.approx(0.02, rel=1e-3)
    torch.testing.assert_close(algorithm.params["layers.0.weight"], w)
    torch.testing.assert_close(algorithm.params["layers.0.bias"], b)
    assert math.isclose(10 ** float(algorithm.raw["log10_lr"]), lr, rel_tol=1e-9)

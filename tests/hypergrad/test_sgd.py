"""Tests of hposvc.hypergrad.sgd against torch.optim.SGD."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hposvc.hypergrad import SGDHyperparameters, sgd_step, zeros_like

DTYPE = torch.float64
STEPS = 5


def _network_and_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DTYPE)
    x = torch.randn(16, 3, dtype=DTYPE)
    y = torch.randn(16, 2, dtype=DTYPE)
    return network, x, y


def _gradients(
    network: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
) -> dict[str, torch.Tensor]:
    weights = {name: w.detach().requires_grad_() for name, w in params.items()}
    prediction = torch.func.functional_call(network, weights, (x,))
    loss = nn.functional.mse_loss(prediction, y)
    gradients = torch.autograd.grad(loss, list(weights.values()))
    return dict(zip(weights, gradients, strict=True))


def _hyperparameters(
    lr: torch.Tensor | dict[str, torch.Tensor], weight_decay: float, momentum: float
) -> SGDHyperparameters:
    return SGDHyperparameters(
        lr=lr,
        weight_decay=torch.tensor(weight_decay, dtype=DTYPE),
        momentum=torch.tensor(momentum, dtype=DTYPE),
    )


def _run_sgd_step(
    hyperparameters: SGDHyperparameters,
) -> list[dict[str, torch.Tensor]]:
    network, x, y = _network_and_data()
    params = {name: p.detach().clone() for name, p in network.named_parameters()}
    buffers = zeros_like(params)
    history = []
    for _ in range(STEPS):
        gradients = _gradients(network, params, x, y)
        params, buffers = sgd_step(params, gradients, buffers, hyperparameters)
        history.append(params)
    return history


@pytest.mark.parametrize(
    ("lr", "weight_decay", "momentum"),
    [
        pytest.param(0.1, 0.0, 0.0, id="plain"),
        pytest.param(0.05, 0.01, 0.0, id="weight-decay"),
        pytest.param(0.05, 0.0, 0.9, id="momentum"),
        pytest.param(0.2, 0.03, 0.7, id="momentum-and-weight-decay"),
    ],
)
def test_sgd_step_matches_torch_optim_sgd(
    lr: float, weight_decay: float, momentum: float
) -> None:
    lr_tensor = torch.tensor(lr, dtype=DTYPE)
    history = _run_sgd_step(_hyperparameters(lr_tensor, weight_decay, momentum))

    network, x, y = _network_and_data()
    optimiser = torch.optim.SGD(
        network.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    for step, ours in enumerate(history):
        optimiser.zero_grad()
        nn.functional.mse_loss(network(x), y).backward()
        optimiser.step()
        for name, reference in network.named_parameters():
            torch.testing.assert_close(
                ours[name],
                reference.detach(),
                rtol=0,
                atol=1e-12,
                msg=lambda text, name=name, step=step: f"{name}, step {step}: {text}",
            )


def test_sgd_step_per_weight_lr_all_equal_matches_scalar() -> None:
    network, _, _ = _network_and_data()
    lr = {name: torch.full_like(p, 0.2) for name, p in network.named_parameters()}
    scalar = _run_sgd_step(_hyperparameters(torch.tensor(0.2, dtype=DTYPE), 0.03, 0.7))
    per_weight = _run_sgd_step(_hyperparameters(lr, 0.03, 0.7))

    for ours, reference in zip(per_weight, scalar, strict=True):
        for name in lr:
            torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=1e-12)

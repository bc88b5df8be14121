"""Tests of hposvc.hypergrad.unrolled against finite differences and the implicit step.

The reference unroll is written out by hand here (plain autograd for the
training gradient, the SGD recursion b = μ b + g + wd w, w = w - lr b, and
the unconstrained-to-natural map), so it shares no code with the library.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from hposvc.hypergrad import initial_raw, linearised_sgd_step, neumann_hypergradient
from hposvc.hypergrad.unrolled import unrolled_hypergradient

DTYPE = torch.float64
LAYER_SIZES = (3, 5, 1)
RAW_SCALARS = ("log10_lr", "log10_weight_decay", "logit_momentum")


def _params(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    params = {}
    for index, (fan_in, fan_out) in enumerate(pairwise(LAYER_SIZES)):
        params[f"weight{index}"] = 0.7 * torch.randn(
            fan_out, fan_in, generator=generator, dtype=DTYPE
        )
        params[f"bias{index}"] = 0.1 * torch.randn(
            fan_out, generator=generator, dtype=DTYPE
        )
    return params


def _loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
    hidden = torch.tanh(x @ params["weight0"].T + params["bias0"])
    prediction = hidden @ params["weight1"].T + params["bias1"]
    return torch.mean((prediction - y) ** 2)


def _data(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, LAYER_SIZES[0], generator=generator, dtype=DTYPE)
    y = torch.sin(x.sum(dim=1, keepdim=True))
    return x, y


VALIDATION = _data(7, seed=100)


def _validation_loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return _loss(params, *VALIDATION)


def _batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [_data(6, seed=index) for index in range(count)]


def _buffers(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: 0.1 * torch.randn(w.shape, generator=generator, dtype=DTYPE)
        for name, w in _params().items()
    }


def _raw() -> dict[str, torch.Tensor]:
    return initial_raw(0.08, 3e-3, 0.6, dtype=DTYPE)


def _reference_validation_loss(
    raw_values: dict[str, float], batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    lr = 10.0 ** raw_values["log10_lr"]
    weight_decay = 10.0 ** raw_values["log10_weight_decay"]
    momentum = 1.0 / (1.0 + math.exp(-raw_values["logit_momentum"]))
    weights = {name: w.clone() for name, w in _params().items()}
    buffers = _buffers()
    for x, y in batches:
        leaves = {name: w.detach().requires_grad_() for name, w in weights.items()}
        gradients = torch.autograd.grad(_loss(leaves, x, y), list(leaves.values()))
        for (name, w), g in zip(weights.items(), gradients, strict=True):
            buffers[name] = momentum * buffers[name] + g + weight_decay * w
            weights[name] = w - lr * buffers[name]
    return float(_validation_loss(weights))


@pytest.mark.parametrize("unroll_steps", [1, 3, 5], ids=lambda k: f"K={k}")
def test_unrolled_hypergradient_matches_central_differences(unroll_steps: int) -> None:
    batches = _batches(unroll_steps)
    raw = _raw()
    result = unrolled_hypergradient(
        _loss, _validation_loss, _params(), _buffers(), raw, batches
    )

    values = {key: float(raw[key]) for key in RAW_SCALARS}
    step = 1e-5
    for key in RAW_SCALARS:
        above = _reference_validation_loss(values | {key: values[key] + step}, batches)
        below = _reference_validation_loss(values | {key: values[key] - step}, batches)
        expected = (above - below) / (2 * step)
        assert float(result.hypergradient[key]) == pytest.approx(expected, rel=1e-5)


def test_unrolled_hypergradient_per_weight_lr_matches_central_differences() -> None:
    batches = _batches(2)
    raw = initial_raw(0.08, 3e-3, 0.6, per_weight_like=_params(), dtype=DTYPE)
    result = unrolled_hypergradient(
        _loss, _validation_loss, _params(), _buffers(), raw, batches
    )

    def loss_at(shift: float) -> float:
        shifted = {
            "log10_lr": {k: v.clone() for k, v in raw["log10_lr"].items()},
            "log10_weight_decay": raw["log10_weight_decay"],
            "logit_momentum": raw["logit_momentum"],
        }
        shifted["log10_lr"]["weight0"][1, 2] += shift
        return float(
            unrolled_hypergradient(
                _loss, _validation_loss, _params(), _buffers(), shifted, batches
            ).validation_loss
        )

    expected = (loss_at(1e-5) - loss_at(-1e-5)) / 2e-5
    actual = float(result.hypergradient["log10_lr"]["weight0"][1, 2])
    assert actual == pytest.approx(expected, rel=1e-5)


def test_unrolled_hypergradient_with_one_step_equals_one_neumann_term() -> None:
    raw = _raw()
    (batch,) = _batches(1)
    unrolled = unrolled_hypergradient(
        _loss, _validation_loss, _params(), _buffers(), raw, [batch]
    )

    step = linearised_sgd_step(_loss, _params(), _buffers(), raw, *batch)
    leaves = {name: w.detach().requires_grad_() for name, w in step.params.items()}
    validation_gradient = dict(
        zip(
            leaves,
            torch.autograd.grad(_validation_loss(leaves), list(leaves.values())),
            strict=True,
        )
    )
    implicit = neumann_hypergradient(
        step.weight_vjp, step.hyperparameter_vjp, validation_gradient, 1
    )
    for key in RAW_SCALARS:
        torch.testing.assert_close(
            unrolled.hypergradient[key], implicit[key], rtol=1e-10, atol=1e-14
        )


def test_unrolled_hypergradient_returns_the_plain_trajectory_without_graph() -> None:
    batches = _batches(4)
    result = unrolled_hypergradient(
        _loss, _validation_loss, _params(), _buffers(), _raw(), batches
    )

    raw_values = {key: float(_raw()[key]) for key in RAW_SCALARS}
    expected = _reference_validation_loss(raw_values, batches)
    assert float(result.validation_loss) == pytest.approx(expected, rel=1e-12)
    tensors = [*result.params.values(), *result.buffers.values()]
    tensors += [result.hypergradient[key] for key in RAW_SCALARS]
    assert all(t.grad_fn is None and not t.requires_grad for t in tensors)


def test_unrolled_hypergradient_without_batches_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one batch"):
        unrolled_hypergradient(
            _loss, _validation_loss, _params(), _buffers(), _raw(), []
        )

"""Tests of hposvc.models: the MLP and its seeded construction."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pytest
import torch
from torch import nn

from hposvc.errors import SpecError
from hposvc.models import MLP, build_model


def _parameters(model: nn.Module) -> list[torch.Tensor]:
    return [parameter.detach() for parameter in model.parameters()]


def test_build_model_same_seed_gives_identical_parameters() -> None:
    first = build_model([8, 50, 50, 1], seed=11)
    second = build_model([8, 50, 50, 1], seed=11)

    assert all(
        torch.equal(a, b)
        for a, b in zip(_parameters(first), _parameters(second), strict=True)
    )


def test_build_model_different_seeds_give_different_parameters() -> None:
    first = build_model([8, 50, 1], seed=0)
    second = build_model([8, 50, 1], seed=1)

    assert not any(
        torch.equal(a, b)
        for a, b in zip(_parameters(first), _parameters(second), strict=True)
    )


def test_build_model_leaves_global_rng_untouched() -> None:
    state = torch.random.get_rng_state()

    build_model([4, 16, 1], seed=5)

    assert torch.equal(torch.random.get_rng_state(), state)


def test_build_model_matches_pytorch_default_linear_init() -> None:
    # torch.nn.Linear draws its defaults from the global RNG in the same order,
    # so a seeded global RNG is an independent reference.
    with torch.random.fork_rng():
        torch.manual_seed(23)
        reference = nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 3))

    model = build_model([6, 20, 3], seed=23)

    assert all(
        torch.equal(a, b)
        for a, b in zip(_parameters(model), _parameters(reference), strict=True)
    )


@pytest.mark.parametrize(
    "layer_sizes",
    [(3, 1), (8, 50, 1), (4, 7, 9, 2)],
    ids=["no-hidden", "one-hidden", "two-hidden"],
)
def test_mlp_layers_follow_layer_sizes(layer_sizes: tuple[int, ...]) -> None:
    model = build_model(layer_sizes, seed=0)

    linear = model.linear_layers
    assert model.layer_sizes == layer_sizes
    shapes = [(layer.in_features, layer.out_features) for layer in linear]
    assert shapes == list(pairwise(layer_sizes))
    activations = [layer for layer in model.layers if isinstance(layer, nn.ReLU)]
    assert len(activations) == len(layer_sizes) - 2
    assert isinstance(model.layers[-1], nn.Linear)


def test_mlp_forward_maps_batch_to_outputs() -> None:
    model = build_model([8, 50, 2], seed=0)

    outputs = model(torch.randn(32, 8, generator=torch.Generator().manual_seed(0)))

    assert outputs.shape == (32, 2)
    assert outputs.dtype == torch.float32


def test_mlp_forward_applies_relu_between_layers() -> None:
    model = build_model([2, 3, 1], seed=4)
    first, last = model.linear_layers
    inputs = torch.tensor([[0.5, -1.0]])

    expected = last(torch.relu(first(inputs)))

    torch.testing.assert_close(model(inputs), expected, rtol=0, atol=0)


def test_build_model_dtype() -> None:
    model = build_model([3, 4, 1], seed=0, dtype=torch.float64)

    assert {parameter.dtype for parameter in model.parameters()} == {torch.float64}
    assert model(torch.zeros(1, 3, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    ("layer_sizes", "message"),
    [
        ([], r"at least 2 sizes \(input and output\), got \[\]"),
        ([8], r"at least 2 sizes \(input and output\), got \[8\]"),
        ([8, 0, 1], r"layer_sizes\[1\] must be a positive integer, got 0"),
        ([8, 50, -1], r"layer_sizes\[2\] must be a positive integer, got -1"),
        ([8, 2.5, 1], r"layer_sizes\[1\] must be a positive integer, got 2.5"),
        ([True, 1], r"layer_sizes\[0\] must be a positive integer, got True"),
    ],
    ids=["empty", "one", "zero", "negative", "fractional", "bool"],
)
def test_mlp_rejects_bad_layer_sizes(layer_sizes: Sequence[int], message: str) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        MLP(layer_sizes)

    assert isinstance(caught.value, ValueError)

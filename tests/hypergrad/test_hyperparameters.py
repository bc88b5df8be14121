"""Tests of hposvc.hypergrad.hyperparameters: the unconstrained space and Adam."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from hposvc.hypergrad import HyperparameterOptimiser, constrain, initial_raw

DTYPE = torch.float64
KEYS = ("log10_lr", "log10_weight_decay", "logit_momentum")


def _like() -> dict[str, torch.Tensor]:
    return {
        "weight": torch.zeros(3, 2, dtype=DTYPE),
        "bias": torch.zeros(3, dtype=DTYPE),
    }


def _leaves(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    return [tree]


def _snapshot(raw: dict[str, Any]) -> list[torch.Tensor]:
    return [leaf.clone() for leaf in _leaves(raw)]


def _hypergradient(raw: dict[str, Any], fill: float) -> dict[str, Any]:
    def filled(tree: Any) -> Any:
        if isinstance(tree, dict):
            return {key: filled(value) for key, value in tree.items()}
        return torch.full_like(tree, fill)

    return filled(raw)


@pytest.mark.parametrize(
    ("lr", "weight_decay", "momentum"),
    [
        pytest.param(0.1, 1e-4, 0.9, id="typical"),
        pytest.param(1e-6, 1e-7, 0.01, id="small"),
        pytest.param(1.0, 0.01, 0.5, id="lr-at-upper-bound"),
        pytest.param(1e-10, 10.0, 0.999, id="lr-at-lower-bound"),
    ],
)
@pytest.mark.parametrize("per_weight", [False, True], ids=["scalar-lr", "per-weight"])
def test_initial_raw_constrain_round_trip(
    lr: float, weight_decay: float, momentum: float, per_weight: bool
) -> None:
    like = _like() if per_weight else None
    raw = initial_raw(lr, weight_decay, momentum, per_weight_like=like, dtype=DTYPE)

    assert raw["log10_weight_decay"].dtype == DTYPE
    assert math.isclose(float(raw["log10_weight_decay"]), math.log10(weight_decay))
    assert math.isclose(
        float(raw["logit_momentum"]), math.log(momentum / (1 - momentum))
    )
    natural = constrain(raw)
    assert math.isclose(float(natural.weight_decay), weight_decay, rel_tol=1e-12)
    assert math.isclose(float(natural.momentum), momentum, rel_tol=1e-12)
    if like is None:
        assert math.isclose(float(natural.lr), lr, rel_tol=1e-12)
        return
    assert isinstance(natural.lr, dict)
    assert set(natural.lr) == set(like)
    for name, weight in like.items():
        assert natural.lr[name].shape == weight.shape
        torch.testing.assert_close(
            natural.lr[name], torch.full_like(weight, lr), rtol=1e-12, atol=0
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("momentum", [0.0, 1.0], ids=["zero", "one"])
def test_initial_raw_momentum_at_bounds_stays_strictly_inside(
    momentum: float, dtype: torch.dtype
) -> None:
    raw = initial_raw(0.01, 1e-4, momentum, dtype=dtype)

    natural = constrain(raw)
    assert natural.momentum.dtype == dtype
    assert math.isfinite(float(raw["logit_momentum"]))
    assert 0.0 < float(natural.momentum) < 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("fill", [-1.0, 1.0], ids=["towards-one", "towards-zero"])
def test_optimiser_step_keeps_momentum_strictly_inside(
    fill: float, dtype: torch.dtype
) -> None:
    raw = initial_raw(0.01, 1e-4, 0.0 if fill > 0 else 1.0, dtype=dtype)
    optimiser = HyperparameterOptimiser(raw, tuned=["logit_momentum"], lr=5.0)

    for _ in range(3):
        assert optimiser.step(_hypergradient(raw, fill))

    assert 0.0 < float(constrain(raw).momentum) < 1.0


@pytest.mark.parametrize(
    ("log10_lr", "fill", "bound"),
    [
        pytest.param(-0.2, -1.0, 0.0, id="above-one"),
        pytest.param(-9.8, 1.0, -10.0, id="below-1e-10"),
    ],
)
@pytest.mark.parametrize("per_weight", [False, True], ids=["scalar-lr", "per-weight"])
def test_optimiser_step_clips_lr_into_bounds(
    log10_lr: float, fill: float, bound: float, per_weight: bool
) -> None:
    like = _like() if per_weight else None
    raw = initial_raw(10.0**log10_lr, 1e-4, 0.5, per_weight_like=like, dtype=DTYPE)
    # Adam's first step moves each entry by about its lr, here past the bound.
    optimiser = HyperparameterOptimiser(raw, tuned=["log10_lr"], lr=0.5)

    assert optimiser.step(_hypergradient(raw, fill))

    lr_leaves = _leaves(raw["log10_lr"])
    assert len(lr_leaves) == (2 if per_weight else 1)
    for leaf in lr_leaves:
        assert bool((leaf == bound).all()), leaf
    for lr in _leaves(constrain(raw).lr):
        assert bool(((lr >= 1e-10 * (1 - 1e-12)) & (lr <= 1.0)).all()), lr


@pytest.mark.parametrize("per_weight", [False, True], ids=["scalar-lr", "per-weight"])
def test_initial_raw_lr_above_one_is_projected(per_weight: bool) -> None:
    like = _like() if per_weight else None

    raw = initial_raw(10.0, 1e-4, 0.5, per_weight_like=like, dtype=DTYPE)

    for leaf in _leaves(raw["log10_lr"]):
        assert bool((leaf == 0.0).all()), leaf


def test_optimiser_step_leaves_untuned_entries_alone() -> None:
    raw = initial_raw(0.01, 1e-4, 0.5, dtype=DTYPE)
    before = {key: raw[key].clone() for key in KEYS}
    optimiser = HyperparameterOptimiser(raw, tuned=["log10_lr"], lr=0.1)

    assert optimiser.step(_hypergradient(raw, 1.0))

    assert not torch.equal(raw["log10_lr"], before["log10_lr"])
    for key in ("log10_weight_decay", "logit_momentum"):
        assert torch.equal(raw[key], before[key]), key


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "minus-inf"]
)
@pytest.mark.parametrize(
    "where", ["log10_lr", "log10_weight_decay", "logit_momentum", "one-weight-lr"]
)
def test_optimiser_step_non_finite_hypergradient_changes_nothing(
    bad: float, where: str
) -> None:
    per_weight = where == "one-weight-lr"
    raw = initial_raw(
        0.01, 1e-4, 0.5, per_weight_like=_like() if per_weight else None, dtype=DTYPE
    )
    optimiser = HyperparameterOptimiser(raw, tuned=KEYS, lr=0.1)
    # One good step first, so that Adam has moments that must not change either.
    assert optimiser.step(_hypergradient(raw, 1.0))
    before = _snapshot(raw)
    adam_before = optimiser.state_dict()
    moments_before = [
        tensor.clone()
        for state in adam_before["state"].values()
        for tensor in state.values()
    ]

    hypergradient = _hypergradient(raw, 1.0)
    if per_weight:
        hypergradient["log10_lr"]["weight"][1, 0] = bad
    else:
        hypergradient[where] = torch.tensor(bad, dtype=DTYPE)

    assert optimiser.step(hypergradient) is False

    for leaf, old in zip(_leaves(raw), before, strict=True):
        assert torch.equal(leaf, old)
        assert leaf.grad is None
    moments_after = [
        tensor
        for state in optimiser.state_dict()["state"].values()
        for tensor in state.values()
    ]
    for new, old in zip(moments_after, moments_before, strict=True):
        assert torch.equal(new, old)


def test_optimiser_unknown_hyperparameter_raises() -> None:
    raw = initial_raw(0.01, 1e-4, 0.5, dtype=DTYPE)

    with pytest.raises(ValueError, match="unknown hyperparameters"):
        HyperparameterOptimiser(raw, tuned=["dropout"], lr=0.1)

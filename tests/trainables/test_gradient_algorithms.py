"""The gradient-based baselines as trial algorithms, on UCI energy in float64.

diff_through_opt, long_diff_through_opt, lorraine, baydin and
random_stepped_lr: their registration and settings, the episodes of
long_diff_through_opt, checkpoints, and the bounds every reported
hyperparameter keeps.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch

from hposvc.catalog import algorithm_ids
from hposvc.errors import SpecError
from hposvc.spec import StudySpec, resolve_spec
from trainables.algorithms import ALGORITHM_CLASSES, TrialAlgorithm
from trainables.algorithms import unrolled as unrolled_module
from trainables.algorithms.stepped import SteppedLR
from trainables.algorithms.unrolled import LONG_DIFF_THROUGH_OPT_VARIANTS
from trainables.trial import build_trial

DTYPE = torch.float64
NEW_ALGORITHMS = [
    "random_stepped_lr",
    "diff_through_opt",
    "long_diff_through_opt",
    "lorraine",
    "baydin",
]
HYPERGRADIENT_ALGORITHMS = NEW_ALGORITHMS[1:]


@pytest.fixture(autouse=True)
def _data(shared_data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPOSVC_CONFIG_DIR", raising=False)


def _spec(algorithm: str, **overrides: Any) -> StudySpec:
    budget = {"hyperparameter_steps": 10, "weight_steps": 10}
    request: dict[str, Any] = {
        "dataset": "uci_energy",
        "algorithm": algorithm,
        "budget": budget | overrides.pop("budget", {}),
    }
    return resolve_spec(request | overrides)


def _trial(algorithm: str, trial_index: int = 0, **overrides: Any) -> TrialAlgorithm:
    config = overrides.pop("config", None)
    return build_trial(
        _spec(algorithm, **overrides), trial_index, config=config, dtype=DTYPE
    )


# Registration and settings ---------------------------------------------------


def test_catalog_lists_the_new_algorithms_in_design_order() -> None:
    ids = algorithm_ids()
    positions = [ids.index(name) for name in ["random", *NEW_ALGORITHMS, "ours_lr"]]
    assert positions == sorted(positions)
    assert all(name in ALGORITHM_CLASSES for name in NEW_ALGORITHMS)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("diff_through_opt", {"unroll_steps": 5, "hyperparameter_lr": 0.05}),
        ("long_diff_through_opt", {"unroll_steps": None, "restart_episodes": True}),
        ("lorraine", {"neumann_terms": 5, "hyperparameter_lr": 0.05}),
        ("baydin", {"hyperparameter_lr": 0.001}),
    ],
)
def test_configs_hold_the_paper_defaults(
    algorithm: str, expected: dict[str, Any]
) -> None:
    settings = resolve_spec({"dataset": "uci_energy", "algorithm": algorithm})
    assert settings.hypergradient.model_dump().items() >= expected.items()


def test_long_diff_through_opt_defaults_to_200_step_episodes_30_updates() -> None:
    spec = resolve_spec({"dataset": "uci_energy", "algorithm": "long_diff_through_opt"})
    assert (spec.budget.weight_steps, spec.budget.hyperparameter_steps) == (200, 30)


@pytest.mark.parametrize("variant", sorted(LONG_DIFF_THROUGH_OPT_VARIANTS))
def test_long_diff_through_opt_variants_are_valid_specs(variant: str) -> None:
    overrides = LONG_DIFF_THROUGH_OPT_VARIANTS[variant]
    spec = resolve_spec(
        {"dataset": "uci_energy", "algorithm": "long_diff_through_opt"} | overrides
    )
    assert spec.budget.weight_steps == overrides["budget"]["weight_steps"]
    assert spec.hypergradient.restart_episodes is (variant != "medium")


def test_unroll_longer_than_the_weight_steps_is_refused() -> None:
    with pytest.raises(SpecError) as error:
        _spec("diff_through_opt", hypergradient={"unroll_steps": 11})
    assert "hypergradient.unroll_steps = 11 exceeds budget.weight_steps = 10" in str(
        error.value
    )


@pytest.mark.parametrize("value", [0, -3], ids=["zero", "negative"])
def test_non_positive_settings_are_refused(value: int) -> None:
    with pytest.raises(SpecError, match="unroll_steps"):
        _spec("diff_through_opt", hypergradient={"unroll_steps": value})
    with pytest.raises(SpecError, match="max_consecutive_skips"):
        _spec("diff_through_opt", hypergradient={"max_consecutive_skips": value})


# long_diff_through_opt episodes ----------------------------------------------


def _record_unroll_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> list[dict[str, torch.Tensor]]:
    starts: list[dict[str, torch.Tensor]] = []
    original = unrolled_module.unrolled_hypergradient

    def recording(loss_fn: Any, validation_loss_fn: Any, params: Any, *rest: Any):
        starts.append({name: w.clone() for name, w in params.items()})
        return original(loss_fn, validation_loss_fn, params, *rest)

    monkeypatch.setattr(unrolled_module, "unrolled_hypergradient", recording)
    return starts


def test_long_diff_through_opt_restarts_from_initial_weights_each_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starts = _record_unroll_starts(monkeypatch)
    trial = _trial("long_diff_through_opt", budget={"weight_steps": 20})
    initial = {name: w.clone() for name, w in trial.params.items()}
    raw_before = float(trial.raw["log10_lr"])

    for _ in range(4):
        trial.hyperparameter_step()
        assert not all(torch.equal(trial.params[n], initial[n]) for n in initial)

    assert len(starts) == 4
    for start in starts:
        assert all(torch.equal(start[name], initial[name]) for name in initial)
    assert float(trial.raw["log10_lr"]) != raw_before


def test_long_diff_through_opt_medium_variant_does_not_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starts = _record_unroll_starts(monkeypatch)
    trial = _trial(
        "long_diff_through_opt",
        budget={"weight_steps": 20},
        hypergradient={"restart_episodes": False},
    )
    trial.hyperparameter_step()
    after_first = {name: w.clone() for name, w in trial.params.items()}
    trial.hyperparameter_step()
    assert all(torch.equal(starts[1][name], after_first[name]) for name in after_first)


def test_diff_through_opt_unrolls_only_the_last_k_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lengths: list[int] = []
    original = unrolled_module.unrolled_hypergradient

    def recording(*args: Any) -> Any:
        lengths.append(len(args[-1]))
        return original(*args)

    monkeypatch.setattr(unrolled_module, "unrolled_hypergradient", recording)
    trial = _trial("diff_through_opt", hypergradient={"unroll_steps": 3})
    metrics = trial.hyperparameter_step()
    assert lengths == [3]
    assert metrics["weight_steps"] == 10


# random_stepped_lr -------------------------------------------------------------


def test_random_stepped_lr_multiplies_lr_by_its_factor_each_step() -> None:
    trial = _trial("random_stepped_lr")
    assert isinstance(trial, SteppedLR)
    low, high = 0.98, 1.0
    assert low <= trial.lr_factor <= high
    initial_lr = 10 ** float(trial.raw["log10_lr"])
    reported = [trial.hyperparameter_step()["lr"] for _ in range(5)]
    expected = [initial_lr * trial.lr_factor**n for n in range(1, 6)]
    assert reported == pytest.approx(expected, rel=1e-9)


def test_random_stepped_lr_factor_is_seeded_per_trial() -> None:
    trials = [_trial("random_stepped_lr", index) for index in (0, 0, 1)]
    factors = [trial.lr_factor for trial in trials if isinstance(trial, SteppedLR)]
    assert factors[0] == factors[1] != factors[2]


def test_random_stepped_lr_is_clipped_at_the_lower_bound() -> None:
    trial = _trial(
        "random_stepped_lr",
        hypergradient={"stepped_lr_factor": [0.01, 0.01]},
        config={"lr": 1e-6},
    )
    lrs = [trial.hyperparameter_step()["lr"] for _ in range(5)]
    assert lrs[-1] == pytest.approx(1e-10, rel=1e-9)
    assert all(1e-10 * (1 - 1e-9) <= lr <= 1.0 for lr in lrs)


# Checkpoints, graphs and bounds ------------------------------------------------


@pytest.mark.parametrize("algorithm", NEW_ALGORITHMS)
def test_restored_state_continues_exactly(algorithm: str) -> None:
    budget = {"weight_steps": 10}
    original = _trial(algorithm, budget=budget)
    for _ in range(2):
        original.hyperparameter_step()
    # Through bytes, as a checkpoint travels: nothing is shared with the original.
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = _trial(algorithm, budget=budget)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    for _ in range(2):
        assert restored.hyperparameter_step() == original.hyperparameter_step()


def _leaves(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    return [tree] if isinstance(tree, torch.Tensor) else []


@pytest.mark.parametrize("algorithm", HYPERGRADIENT_ALGORITHMS)
def test_no_autograd_graph_survives_a_hyperparameter_step(algorithm: str) -> None:
    trial = _trial(algorithm, budget={"weight_steps": 10})
    trial.hyperparameter_step()
    state = trial.state_dict()
    for tensor in _leaves([trial.params, trial.buffers, trial.raw]) + _leaves(
        {key: state[key] for key in ("params", "buffers", "raw")}
    ):
        assert tensor.grad_fn is None


def _natural_bounds_hold(metrics: dict[str, Any]) -> bool:
    lr, momentum, weight_decay = (
        metrics["lr"],
        metrics["momentum"],
        metrics["weight_decay"],
    )
    finite = all(math.isfinite(v) for v in (lr, momentum, weight_decay))
    return finite and 1e-10 * (1 - 1e-9) <= lr <= 1.0 and 0.0 < momentum < 1.0


@pytest.mark.parametrize("algorithm", NEW_ALGORITHMS)
def test_hyperparameters_stay_in_bounds_from_lr_one_momentum_near_one(
    algorithm: str,
) -> None:
    # Stepped on past divergence: hyperparameters stay finite and in bounds even
    # when the weights are not. Two weight steps keep NaN arithmetic cheap.
    trial = _trial(
        algorithm,
        budget={"weight_steps": 2},
        config={"lr": 1.0, "momentum": 0.999999},
        hypergradient={"max_consecutive_skips": 1000, "unroll_steps": 2},
    )
    for _ in range(50):
        metrics = trial.hyperparameter_step()
        assert _natural_bounds_hold(metrics), metrics
    raw_values = _leaves(trial.raw)
    assert all(bool(torch.isfinite(value).all()) for value in raw_values)

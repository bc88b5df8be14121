"""Divergence and non-finite hypergradients: skipped updates, diverged trials.

A non-finite hypergradient leaves the hyperparameters as they were, counts a
skip and warns; ``max_consecutive_skips`` of them in a row, or a non-finite
training loss, end the trial as ``diverged`` with the reason, and the study
goes on with its other trials.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import trainables.algorithms.baydin as baydin_module
from hposvc.spec import resolve_spec
from hposvc.study import run_study
from trainables.algorithms import TrialAlgorithm
from trainables.trial import build_trial

DTYPE = torch.float64
MAX_SKIPS = 3


@pytest.fixture(autouse=True)
def _data(shared_data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPOSVC_CONFIG_DIR", raising=False)


def _trial(algorithm: str, **config: float) -> TrialAlgorithm:
    spec = resolve_spec(
        {
            "dataset": "uci_energy",
            "algorithm": algorithm,
            "budget": {"hyperparameter_steps": 10, "weight_steps": 10},
            "hypergradient": {"max_consecutive_skips": MAX_SKIPS},
        }
    )
    return build_trial(spec, 0, config=config or None, dtype=DTYPE)


def _poison_hypergradient(
    trial: TrialAlgorithm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make every hypergradient of ``trial`` NaN, leaving training untouched."""
    problem = trial.problem
    if trial.id == "baydin":
        monkeypatch.setattr(
            baydin_module, "lr_hypergradient", lambda *_: torch.tensor(math.nan)
        )
    elif trial.id in ("diff_through_opt", "long_diff_through_opt"):
        loss = problem.validation_loss
        monkeypatch.setattr(problem, "validation_loss", lambda p: loss(p) * math.nan)
    else:
        gradient = problem.validation_gradient

        def nan_gradient(params: Any) -> dict[str, torch.Tensor]:
            return {name: g * math.nan for name, g in gradient(params).items()}

        monkeypatch.setattr(problem, "validation_gradient", nan_gradient)


#: Hypergradient updates per hyperparameter step of each algorithm.
UPDATES_PER_STEP = {
    "diff_through_opt": 1,
    "long_diff_through_opt": 1,
    "lorraine": 1,
    "baydin": 10,
    "ours_lr_momentum": 1,
}


@pytest.mark.parametrize("algorithm", sorted(UPDATES_PER_STEP))
def test_non_finite_hypergradient_skips_the_update(
    algorithm: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    trial = _trial(algorithm)
    _poison_hypergradient(trial, monkeypatch)
    raw_before = {key: value for key, value in _flat(trial.raw).items()}

    with caplog.at_level(logging.WARNING):
        metrics = trial.hyperparameter_step()

    assert _flat(trial.raw) == raw_before
    assert metrics["skipped_updates"] == UPDATES_PER_STEP[algorithm]
    assert math.isfinite(metrics["training_loss"])
    natural = ("lr", "weight_decay", "momentum")
    assert all(math.isfinite(metrics[key]) for key in natural)
    assert f"{trial.trial_name}: non-finite hypergradient at hyperparameter step 1" in (
        caplog.text
    )


@pytest.mark.parametrize("algorithm", ["diff_through_opt", "lorraine"])
def test_consecutive_skips_end_the_trial_as_diverged(
    algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = _trial(algorithm)
    _poison_hypergradient(trial, monkeypatch)
    reasons = []
    for _ in range(MAX_SKIPS):
        metrics = trial.hyperparameter_step()
        reasons.append(trial.divergence_reason(metrics["training_loss"]))
    assert reasons[:-1] == [None] * (MAX_SKIPS - 1)
    assert reasons[-1] == (
        f"{MAX_SKIPS} non-finite hypergradients in a row (the last at hyperparameter"
        f" step {MAX_SKIPS})"
    )


def test_a_finite_update_resets_the_consecutive_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trial = _trial("diff_through_opt")
    with monkeypatch.context() as patch:
        _poison_hypergradient(trial, patch)
        trial.hyperparameter_step()
        trial.hyperparameter_step()
    metrics = trial.hyperparameter_step()
    assert (metrics["skipped_updates"], metrics["consecutive_skips"]) == (2, 0)
    restored = _trial("diff_through_opt")
    restored.load_state_dict(trial.state_dict())
    assert restored.consecutive_skips == 0 and restored.skipped_updates == 2


def test_non_finite_training_loss_gives_the_step_as_reason() -> None:
    trial = _trial("ours_lr", lr=1.0, momentum=0.999999)
    for _ in range(10):
        metrics = trial.hyperparameter_step()
        reason = trial.divergence_reason(metrics["training_loss"])
        if reason is not None:
            break
    step = trial.hyperparameter_steps_done
    assert reason == f"non-finite training loss at hyperparameter step {step}"


def test_diverged_trial_does_not_stop_the_study(
    ray_session: None, tmp_path: Path
) -> None:
    # Seed 4 puts trial 1 at lr 0.47, momentum 0.61: it diverges within 5
    # steps, while trial 0 (lr 0.004) trains to the end.
    spec = resolve_spec(
        {
            "dataset": "uci_energy",
            "algorithm": "diff_through_opt",
            "seed": 4,
            "samples": 2,
            "budget": {"hyperparameter_steps": 5, "weight_steps": 10},
            "initial": {"log10_lr": [-3.0, 0.0], "momentum": [0.0, 1.0]},
        }
    )
    result = run_study(spec, results_dir=tmp_path, study_id="divergence")

    summary = json.loads(result.summary_path.read_text())
    completed, diverged = sorted(summary["trials"], key=lambda t: t["index"])
    assert summary["status"] == "completed"
    assert completed["status"] == "completed"
    assert completed["hyperparameter_steps"] == 5
    assert diverged["status"] == "diverged"
    assert diverged["reason"].startswith("non-finite training loss at hyperparameter")
    for record in (completed, diverged):
        assert all(
            math.isfinite(record["final"][key])
            for key in ("lr", "weight_decay", "momentum")
        )


def _flat(tree: Any, prefix: str = "") -> dict[str, list[float]]:
    if isinstance(tree, dict):
        flat: dict[str, list[float]] = {}
        for key, value in tree.items():
            flat |= _flat(value, f"{prefix}{key}.")
        return flat
    return {prefix: tree.detach().reshape(-1).tolist()}

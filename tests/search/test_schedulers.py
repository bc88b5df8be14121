"""ASHA and PBT on local Ray: early stopping despite NaN, exploits that stay sane."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from hposvc.search import OBJECTIVE, build_scheduler, scheduling_objective
from hposvc.spec import resolve_spec
from hposvc.study import run_study

PENALTY = 10.0


def _spec(algorithm: str, **fields: Any) -> Any:
    request: dict[str, Any] = {
        "dataset": "uci_energy",
        "algorithm": algorithm,
        "samples": 4,
        "budget": {"hyperparameter_steps": 12, "weight_steps": 3},
    }
    for key, value in fields.items():
        if isinstance(value, dict):
            request[key] = request.get(key, {}) | value
        else:
            request[key] = value
    return resolve_spec(request)


class _Events:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def results(self) -> dict[str, list[dict[str, Any]]]:
        by_trial: dict[str, list[dict[str, Any]]] = {}
        for event in self.events:
            if event["type"] == "trial_result":
                by_trial.setdefault(event["trial_id"], []).append(event["metrics"])
        return by_trial


@pytest.mark.usefixtures("ray_session")
def test_asha_stops_trials_below_cutoff_despite_nan(tmp_path: Path) -> None:
    # Defined here so that Ray ships it by value (tests are not a package).
    def losses_by_index(config: dict[str, Any]) -> None:
        # Trial 0 reports NaN from its first step; trial k > 0 reports loss k.
        index = config["trial_index"]
        for step in range(1, 9):
            loss = math.nan if index == 0 else float(index)
            tune.report(
                {
                    "hyperparameter_step": step,
                    "validation_loss": loss,
                    OBJECTIVE: scheduling_objective(loss, PENALTY),
                }
            )

    spec = _spec(
        "asha",
        budget={"hyperparameter_steps": 8},
        search={"asha": {"grace_period": 1, "reduction_factor": 2}},
    )
    grid = tune.Tuner(
        losses_by_index,
        param_space={"trial_index": tune.grid_search([0, 1, 2, 3, 4])},
        tune_config=tune.TuneConfig(
            scheduler=build_scheduler(spec),
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()

    steps = {
        result.config["trial_index"]: result.metrics["hyperparameter_step"]
        for result in (grid[i] for i in range(len(grid)))
    }
    assert not grid.errors
    assert steps[1] == 8
    stopped = [index for index in (2, 3, 4) if steps[index] < 8]
    assert len(stopped) >= 2, steps


@pytest.mark.usefixtures("ray_session")
def test_pbt_exploits_forward_and_within_bounds(tmp_path: Path) -> None:
    spec = _spec(
        "pbt",
        samples=4,
        search={"pbt": {"perturbation_interval": 3, "quantile_fraction": 0.5}},
    )
    events = _Events()
    result = run_study(spec, results_dir=tmp_path, sinks=[events])

    results = events.results()
    assert len(results) == 4
    exploited = 0
    for metrics in results.values():
        steps = [m["hyperparameter_step"] for m in metrics]
        assert steps == sorted(steps) and len(set(steps)) == len(steps), steps
        assert steps[-1] == 12
        for m in metrics:
            assert 1e-6 * (1 - 1e-5) <= m["lr"] <= 1e-1 * (1 + 1e-5)
            assert 1e-7 * (1 - 1e-5) <= m["weight_decay"] <= 1e-2 * (1 + 1e-5)
            assert 0.0 < m["momentum"] < 1.0
        # Fixed-hyperparameter trials change lr only through an exploit.
        exploited += len({m["lr"] for m in metrics}) > 1
    assert exploited >= 1
    summary = json.loads(result.summary_path.read_text())
    assert sorted(t["index"] for t in summary["trials"]) == [0, 1, 2, 3]
    assert summary["search"]["scheduler"] == "pbt"


@pytest.mark.usefixtures("ray_session")
def test_pbt_over_ours_lr_momentum_runs(tmp_path: Path) -> None:
    spec = _spec(
        "ours_lr_momentum",
        samples=3,
        budget={"hyperparameter_steps": 6, "weight_steps": 2},
        search={"scheduler": "pbt", "pbt": {"perturbation_interval": 2}},
    )
    result = run_study(spec, results_dir=tmp_path)

    summary = result.summary
    assert summary["search"]["trainable_algorithm"] == "ours_lr_momentum"
    assert summary["aggregate"]["trials"] == 3
    assert all(t["hyperparameter_steps"] == 6 for t in summary["trials"])


class _FakeTrial:
    def __init__(self, index: int, status: str = "running"):
        self.trial_id = f"t{index}"
        self.experiment_tag = self.trial_id
        self.config = {"trial_index": index, "lr": 0.09, "weight_decay": 1e-7}
        self.config["momentum"] = 0.95
        self.last_result = {"status": status}

    def is_finished(self) -> bool:
        return False


def _pbt_with(trials: list[_FakeTrial], scores: list[float]) -> Any:
    from ray.tune.schedulers.pbt import _PBTTrialState

    scheduler = build_scheduler(
        _spec("pbt", search={"pbt": {"quantile_fraction": 0.5}})
    )
    for trial, score in zip(trials, scores, strict=True):
        state = _PBTTrialState(trial)
        state.last_score = score
        state.last_result = trial.last_result
        scheduler._trial_state[trial] = state
    return scheduler


def test_pbt_diverged_trial_is_never_a_donor() -> None:
    trials = [_FakeTrial(0, "diverged"), _FakeTrial(1), _FakeTrial(2), _FakeTrial(3)]
    # PBT maximises internally: the diverged trial scores best here on purpose.
    scheduler = _pbt_with(trials, [4.0, 3.0, 2.0, 1.0])
    _, upper = scheduler._quantiles()
    assert trials[0] not in upper
    assert trials[1] in upper


def test_pbt_new_config_keeps_own_index_and_stays_in_bounds() -> None:
    trials = [_FakeTrial(0), _FakeTrial(5)]
    scheduler = _pbt_with(trials, [1.0, 2.0])
    for _ in range(50):
        config, _ = scheduler._get_new_config(trials[0], trials[1])
        assert config["trial_index"] == 0
        assert 1e-6 <= config["lr"] <= 1e-1
        assert 1e-7 <= config["weight_decay"] <= 1e-2
        assert 0.0 <= config["momentum"] < 1.0

"""Every study-level method end to end on local Ray, and bayesopt restored mid-study."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from hposvc.search import build_searcher
from hposvc.search.bayesopt import BayesOptSearcher
from hposvc.spec import resolve_spec
from hposvc.study import build_tuner, run_study

pytestmark = pytest.mark.usefixtures("ray_session")


def _spec(algorithm: str, samples: int = 4, **fields: Any) -> Any:
    return resolve_spec(
        {
            "dataset": "uci_energy",
            "algorithm": algorithm,
            "samples": samples,
            "budget": {"hyperparameter_steps": 6, "weight_steps": 2},
            "search": {"random_points": 2, "pbt": {"perturbation_interval": 2}},
        }
        | fields
    )


@pytest.mark.parametrize("algorithm", ["bayesopt", "tpe", "asha", "pbt"])
def test_method_small_study_writes_summary(algorithm: str, tmp_path: Path) -> None:
    result = run_study(_spec(algorithm), results_dir=tmp_path)

    summary = json.loads(result.summary_path.read_text())
    assert summary["status"] == "completed"
    assert summary["algorithm"] == algorithm
    assert summary["search"]["trainable_algorithm"] == "random"
    assert summary["search"]["stopped_early"] is None
    assert sorted(t["index"] for t in summary["trials"]) == [0, 1, 2, 3]
    for trial in summary["trials"]:
        assert set(trial["initial"]) == {"lr", "weight_decay", "momentum"}
        if algorithm in ("bayesopt", "tpe"):
            # Fixed-hyperparameter trials end where the searcher started them.
            assert trial["final"]["lr"] == pytest.approx(
                trial["initial"]["lr"], rel=1e-5
            )
    assert summary["best_trial"] is not None


def test_bayesopt_stopping_early_completes_with_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any) -> dict[str, float]:
        raise RuntimeError("acquisition failed")

    monkeypatch.setattr("bayes_opt.BayesianOptimization.suggest", broken)
    result = run_study(_spec("bayesopt", samples=5), results_dir=tmp_path)

    summary = json.loads(result.summary_path.read_text())
    assert summary["status"] == "completed"
    assert summary["aggregate"]["trials"] < 5
    assert "acquisition failed" in summary["search"]["stopped_early"]


class _InterruptAfter(tune.Callback):
    """Sends SIGINT to the driver once ``count`` trials completed (Tune stops)."""

    def __init__(self, count: int):
        self.count = count
        self.completed = 0

    def on_trial_complete(
        self, iteration: int, trials: list, trial: Any, **info: Any
    ) -> None:
        self.completed += 1
        if self.completed == self.count:
            os.kill(os.getpid(), signal.SIGINT)


def test_bayesopt_interrupted_and_restored_keeps_history(tmp_path: Path) -> None:
    from trainables.trainable import HyperparameterTrainable

    spec = _spec(
        "bayesopt", samples=5, search={"random_points": 2, "max_concurrent": 1}
    )
    tuner = build_tuner(
        spec, "restored", tmp_path, _InterruptAfter(3), searcher=build_searcher(spec)
    )
    first = tuner.fit()
    assert len(first) < 5

    restored = tune.Tuner.restore(
        str(tmp_path / "restored"),
        trainable=tune.with_resources(HyperparameterTrainable, {"cpu": 1}),
        resume_unfinished=True,
    )
    grid = restored.fit()

    indices = sorted(grid[i].config["trial_index"] for i in range(len(grid)))
    assert indices == [0, 1, 2, 3, 4]
    state_files = list((tmp_path / "restored").glob("searcher-state-*.pkl"))
    searcher = BayesOptSearcher(bounds=_bounds(spec))
    # Named by session start time: the last name is the resumed session.
    searcher.restore(str(max(state_files, key=lambda path: path.name)))
    assert len(searcher.observations) == 5
    assert searcher.suggested == 5


def _bounds(spec: Any) -> dict[str, tuple[float, float]]:
    from hposvc.search import SearchSpace

    return SearchSpace.from_spec(spec).free

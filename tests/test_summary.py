"""summary.json records: robust to trials that failed before reporting anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hposvc.spec import resolve_spec
from hposvc.summary import trial_record


@dataclass
class FakeResult:
    """The fields of ``ray.tune.Result`` that ``trial_record`` reads."""

    metrics: dict[str, Any] | None
    config: dict[str, Any] | None
    error: Exception | None
    path: str


def test_trial_record_of_trial_failed_in_setup_without_config() -> None:
    spec = resolve_spec({"dataset": "uci_energy", "algorithm": "ours_lr"})
    result = FakeResult(
        metrics=None,
        config=None,
        error=RuntimeError("Traceback ...\nDataError: no data at /nowhere"),
        path="/results/study/trial_0003",
    )

    record = trial_record(spec, result, budget=400)

    assert record["index"] == 3
    assert record["status"] == "failed"
    assert record["error"] == "DataError: no data at /nowhere"
    assert record["hyperparameter_steps"] == 0
    assert record["final_test_loss"] is None
    # Grid-seeded trials start from their seeded sample, config or not.
    assert set(record["initial"]) == {"lr", "weight_decay", "momentum"}


def test_trial_record_of_searcher_trial_without_config_has_no_initial() -> None:
    spec = resolve_spec({"dataset": "uci_energy", "algorithm": "tpe"})
    result = FakeResult(
        metrics=None, config=None, error=RuntimeError("x"), path="/r/s/trial_0000"
    )

    assert trial_record(spec, result, budget=400)["initial"] is None

"""A finished study's ``summary.json``: per-trial records, best trial, aggregate.

Built from Ray Tune's ``ResultGrid`` by :func:`summarise`; every number is
JSON-safe (non-finite values become ``null``, see :func:`hposvc.events.json_safe`).
A trial's record holds at least ``trial_id``, ``index``, ``status``
(``completed``, ``diverged`` with ``reason``, ``stopped`` by a scheduler, or
``failed`` with ``error``), ``initial`` and ``final`` hyperparameters, the final
losses (test loss in the target's original units and normalised),
``hyperparameter_steps`` and ``wall_seconds``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray import tune

from hposvc.events import json_safe, last_line, trial_event_type
from hposvc.hypergrad.hyperparameters import MOMENTUM_EPSILON
from hposvc.spec import StudySpec

__all__ = ["summarise", "trial_record", "write_json_atomically"]


def summarise(
    spec: StudySpec,
    study_id: str,
    grid: tune.ResultGrid,
    *,
    started: float,
    finished: float,
    stop_reason: str | None = None,
) -> dict[str, Any]:
    """The study's summary: settings, one record per trial, best trial, aggregate.

    ``search`` names the searcher, scheduler and trainable-level algorithm;
    its ``stopped_early`` holds the reason when the searcher ended the study
    before ``samples`` trials (the study still counts as completed).
    """
    budget = spec.budget.hyperparameter_steps
    trials = sorted(
        (trial_record(spec, grid[i], budget) for i in range(len(grid))),
        key=lambda record: record["index"],
    )
    finite = [
        t
        for t in trials
        if t["status"] != "failed" and _finite(t["final_validation_loss"])
    ]
    best = min(finite, key=lambda t: t["final_validation_loss"], default=None)
    test_losses = [
        t["final_test_loss"] for t in trials if _finite(t["final_test_loss"])
    ]
    return json_safe(
        {
            "study_id": study_id,
            "dataset": spec.dataset,
            "algorithm": spec.algorithm,
            "status": "completed",
            "started_at": _iso(started),
            "finished_at": _iso(finished),
            "wall_seconds": finished - started,
            "spec": spec.model_dump(mode="json"),
            "search": {
                "searcher": spec.searcher,
                "scheduler": spec.scheduler,
                "trainable_algorithm": spec.trainable_algorithm,
                "stopped_early": stop_reason,
            },
            "trials": trials,
            "best_trial": best,
            "aggregate": {
                "trials": len(trials),
                "by_status": _count_by_status(trials),
                "mean_final_test_loss": statistics.fmean(test_losses)
                if test_losses
                else None,
                "median_final_test_loss": statistics.median(test_losses)
                if test_losses
                else None,
                "finite_test_losses": len(test_losses),
            },
        }
    )


def trial_record(spec: StudySpec, result: Any, budget: int) -> dict[str, Any]:
    """One trial's line of ``summary.json``."""
    from trainables.trial import initial_hyperparameters

    metrics = result.metrics or {}
    # A trial that failed in setup may come back without its config.
    config = result.config or {}
    index = _trial_index(config, metrics, result.path)
    # PBT rewrites a trial's config at each exploit; it started from its seed.
    exploited = spec.scheduler == "pbt" and spec.searcher == "grid_seeded"
    initial: dict[str, float] | None = None
    if config or spec.searcher == "grid_seeded":
        initial = initial_hyperparameters(
            spec, index, None if exploited else config
        ).as_dict()
        initial["momentum"] = min(
            max(initial["momentum"], MOMENTUM_EPSILON), 1 - MOMENTUM_EPSILON
        )
    if result.error is not None:
        status = "failed"
    else:
        status = trial_event_type(metrics, budget).removeprefix("trial_")
    final = {key: metrics.get(key) for key in ("lr", "weight_decay", "momentum")}
    final |= {key: metrics[key] for key in ("lr_min", "lr_max") if key in metrics}
    record = {
        "trial_id": metrics.get("trial_id") or _trial_id_from_path(result.path),
        "index": index,
        "status": status,
        "initial": initial,
        "final": final,
        "final_training_loss": metrics.get("training_loss"),
        "final_validation_loss": metrics.get("validation_loss"),
        "final_test_loss": metrics.get("test_loss_original_units"),
        "final_test_loss_normalised": metrics.get("test_loss"),
        "hyperparameter_steps": metrics.get("hyperparameter_step", 0),
        "skipped_updates": metrics.get("skipped_updates", 0),
        "wall_seconds": metrics.get("wall_seconds", 0.0),
        "path": result.path,
    }
    if status == "diverged":
        record["reason"] = metrics.get("reason")
    if result.error is not None:
        record["error"] = last_line(str(result.error))
    return record


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it into place."""
    temporary = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    temporary.replace(path)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _count_by_status(trials: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial["status"]] = counts.get(trial["status"], 0) + 1
    return counts


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _trial_index(config: dict[str, Any], metrics: dict[str, Any], path: Any) -> int:
    if "trial_index" in config:
        return int(config["trial_index"])
    if "trial_index" in metrics:
        return int(metrics["trial_index"])
    # Trial directories are named trial_<index> (see _trial_name).
    return int(Path(str(path)).name.removeprefix("trial_"))


def _trial_id_from_path(path: str | None) -> str | None:
    return Path(path).name if path else None

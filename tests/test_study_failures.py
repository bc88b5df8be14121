"""A study whose every trial fails says so: failed status, the first error, exit 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hposvc.errors import StudyFailed
from hposvc.spec import resolve_spec
from hposvc.study import run_study


def test_study_with_every_trial_failed_is_failed(
    tmp_path: Path, shared_data: Path, ray_session: None
) -> None:
    # uci_boston is not in ../shared/data, and its download goes to a closed
    # loopback port (tests/conftest.py): every trial fails in setup.
    spec = resolve_spec(
        {
            "dataset": "uci_boston",
            "algorithm": "random",
            "samples": 2,
            "budget": {"hyperparameter_steps": 2, "weight_steps": 2},
        }
    )
    events: list[dict[str, Any]] = []

    with pytest.raises(
        StudyFailed, match=r"all 2 trials failed; trial \d: .*DataError"
    ):
        run_study(spec, results_dir=tmp_path, study_id="broken", sinks=[events.append])

    kinds = [event["type"] for event in events]
    assert kinds.count("trial_failed") == 2
    assert "study_completed" not in kinds
    assert kinds[-1] == "study_failed"
    failed = [event for event in events if event["type"] == "trial_failed"]
    assert all("DataError" in event["error"] for event in failed)
    summary = json.loads((tmp_path / "broken" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert {trial["status"] for trial in summary["trials"]} == {"failed"}

"""Studies that cannot run say so: failed status, the first error, one event."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hposvc.errors import DataError, StudyFailed
from hposvc.spec import resolve_spec
from hposvc.study import run_study

# uci_boston is not in ../shared/data, and its download goes to a closed
# loopback port (tests/conftest.py).
TWO_TINY_BOSTON_TRIALS = {
    "dataset": "uci_boston",
    "algorithm": "random",
    "samples": 2,
    "budget": {"hyperparameter_steps": 2, "weight_steps": 2},
}


def test_study_with_every_trial_failed_is_failed(
    tmp_path: Path,
    shared_data: Path,
    ray_session: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The driver finds uci_boston in a data directory of its own, so the
    # study starts; the trial processes, started with the session's Ray, read
    # ../shared/data, where it is absent: every trial fails in setup.
    driver_data = tmp_path / "driver-data"
    (driver_data / "uci" / "boston").mkdir(parents=True)
    shutil.copy(
        shared_data / "uci" / "energy" / "data.txt",
        driver_data / "uci" / "boston" / "data.txt",
    )
    monkeypatch.setenv("HPOSVC_DATA_DIR", str(driver_data))
    spec = resolve_spec(TWO_TINY_BOSTON_TRIALS)
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


def test_study_whose_data_cannot_load_fails_before_any_trial(
    tmp_path: Path, shared_data: Path, ray_session: None
) -> None:
    spec = resolve_spec(TWO_TINY_BOSTON_TRIALS)
    events: list[dict[str, Any]] = []

    with pytest.raises(DataError, match=r"boston/data\.txt is missing"):
        run_study(spec, results_dir=tmp_path, study_id="no-data", sinks=[events.append])

    assert [event["type"] for event in events] == ["study_failed"]
    assert "DataError" in events[0]["error"]
    assert not (tmp_path / "no-data").exists()

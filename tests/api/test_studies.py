"""Studies run end to end: REST, Ray Jobs on a real Ray head, Redis streams, SSE."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest

from hposvc.service import LocalRayHead
from tests.api.support import (
    API_TOKEN,
    TERMINAL,
    TINY,
    ApiProcess,
    read_events,
    stream_key,
)


def _submit(client: httpx.Client, **overrides: Any) -> str:
    body = TINY | {"name": f"t-{secrets.token_hex(4)}"} | overrides
    response = client.post("/studies", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "pending"
    assert response.headers["location"] == f"/studies/{created['study_id']}"
    return str(created["study_id"])


def _wait_status(
    client: httpx.Client, study_id: str, wanted: str, seconds: float
) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        study = client.get(f"/studies/{study_id}").json()
        if study["status"] == wanted:
            return dict(study)
        time.sleep(0.5)
    raise AssertionError(f"study {study_id} never became {wanted}: {study}")


def test_study_followed_to_its_end_agrees_with_trials(client: httpx.Client) -> None:
    study_id = _submit(client)

    events = read_events(client, study_id)

    kinds = [event["type"] for _, event in events]
    assert kinds[0] == "study_started", events
    assert kinds[-1] == "study_completed"
    assert sum(kind in TERMINAL for kind in kinds) == 1
    ids = [event_id for event_id, _ in events]
    assert ids == sorted(ids, key=stream_key) and len(set(ids)) == len(ids)
    last_result: dict[int, dict] = {}
    for _, event in events:
        if event["type"] == "trial_result":
            last_result[event["index"]] = event["metrics"]
    assert sorted(last_result) == [0, 1]
    assert all(m["hyperparameter_step"] == 3 for m in last_result.values())

    trials = client.get(f"/studies/{study_id}/trials").json()["trials"]
    assert [t["index"] for t in trials] == [0, 1]
    for trial in trials:
        assert trial["status"] == "completed"
        metrics = last_result[trial["index"]]
        assert trial["final_validation_loss"] == pytest.approx(
            metrics["validation_loss"]
        )
        assert trial["final_test_loss"] == pytest.approx(
            metrics["test_loss_original_units"]
        )
    study = client.get(f"/studies/{study_id}").json()
    assert study["status"] == "completed"
    assert study["progress"] == {"trials_done": 2, "trials_total": 2}
    assert study["best_trial"]["index"] in (0, 1)
    assert study["spec"]["samples"] == 2
    listed = client.get("/studies", params={"status": "completed"}).json()
    assert study_id in [s["study_id"] for s in listed["studies"]]


def test_study_whose_data_cannot_load_fails_once_with_the_reason(
    client: httpx.Client,
) -> None:
    # uci_boston is absent from ../shared/data and its download goes to a
    # closed loopback port (tests/conftest.py): the job refuses the study
    # before any trial starts.
    study_id = _submit(client, dataset="uci_boston")

    events = read_events(client, study_id)

    kinds = [event["type"] for _, event in events]
    assert kinds[-1] == "study_failed"
    assert sum(kind in TERMINAL for kind in kinds) == 1
    assert "trial_started" not in kinds
    assert "DataError" in events[-1][1]["error"]
    assert "boston/data.txt is missing" in events[-1][1]["error"]
    study = _wait_status(client, study_id, "failed", 30)
    assert "DataError" in study["error"]
    assert client.get(f"/studies/{study_id}/trials").json()["trials"] == []


def test_reconnect_with_last_event_id_has_no_gap_and_no_repeat(
    client: httpx.Client,
) -> None:
    study_id = _submit(client)

    first = read_events(client, study_id, stop_after=3)
    rest = read_events(client, study_id, last_event_id=first[-1][0])

    whole = read_events(client, study_id)
    assert [i for i, _ in first + rest] == [i for i, _ in whole]
    assert whole[-1][1]["type"] == "study_completed"


def test_api_killed_mid_study_then_restarted_completes_stream(
    api_env: dict[str, str],
) -> None:
    from hposvc.service import free_port

    server = ApiProcess(api_env, free_port()).start()
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            study_id = _submit(http)
            seen = read_events(http, study_id, stop_after=2)
        server.kill()
        server.start()
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            rest = read_events(http, study_id, last_event_id=seen[-1][0])
            whole = read_events(http, study_id)
    finally:
        server.stop()

    assert [i for i, _ in seen + rest] == [i for i, _ in whole]
    kinds = [event["type"] for _, event in whole]
    assert kinds[-1] == "study_completed"
    assert kinds.count("trial_result") == 2 * 3


def test_delete_stops_a_running_study(
    client: httpx.Client, ray_head: LocalRayHead
) -> None:
    study_id = _submit(
        client, samples=2, budget={"hyperparameter_steps": 100000, "weight_steps": 50}
    )
    read_events(client, study_id, stop_after=2)  # running: started + a trial

    cancelled = client.delete(f"/studies/{study_id}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = client.delete(f"/studies/{study_id}")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"

    events = read_events(client, study_id)
    assert events[-1][1]["type"] == "study_cancelled"
    # The job is stopped, so its trials stop: no result lands after the cancel.
    steps_before = client.get(f"/studies/{study_id}/trials").json()["trials"]
    time.sleep(3)
    steps_after = client.get(f"/studies/{study_id}/trials").json()["trials"]
    assert steps_after == steps_before
    _wait_job_stopped(ray_head.jobs_url, study_id)


def _wait_job_stopped(jobs_url: str, study_id: str) -> None:
    from ray.job_submission import JobSubmissionClient

    from hposvc.settings import ServiceSettings

    token = ServiceSettings().ray_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    jobs = JobSubmissionClient(jobs_url, headers=headers)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if str(jobs.get_job_status(study_id).value) == "STOPPED":
            return
        time.sleep(0.5)
    raise AssertionError(f"Ray job {study_id} is still {jobs.get_job_status(study_id)}")


def test_refuses_gpu_trials_on_a_cpu_cluster(client: httpx.Client) -> None:
    response = client.post("/studies", json=TINY | {"resources": {"gpu": 1}})
    assert response.status_code == 422
    assert "resources.gpu" in response.json()["detail"]
    assert "has 0" in response.json()["detail"]
    assert response.json()["problems"] == [
        {
            "field": "resources.gpu",
            "value": 1.0,
            "message": "at most 0: the Ray cluster's GPUs in all",
        }
    ]


def test_readyz_with_redis_and_ray_up(api: ApiProcess) -> None:
    response = httpx.get(f"{api.url}/readyz", timeout=20)
    assert response.status_code == 200, response.text

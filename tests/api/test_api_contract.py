"""The API's contract with Ray stubbed out: names, validation, auth, limits, streams.

Redis is real; Ray is replaced by :class:`FakeRayJobs`, since these tests are
about the API and twenty real studies at once would not fit a 2-CPU runner.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import httpx
import pytest
import redis

from hposvc.service import LocalRedis
from hposvc.store import StudyStore
from tests.api.support import API_TOKEN, TINY, InProcessApi, fake_settings, read_events

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def _post_many(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as http:
            return list(
                await asyncio.gather(*(http.post("/studies", json=b) for b in bodies))
            )

    return asyncio.run(run())


def test_twenty_concurrent_posts_of_one_name_give_one_study(
    fake_api: InProcessApi,
) -> None:
    body = TINY | {"name": f"same-{secrets.token_hex(3)}"}

    responses = _post_many(fake_api.url, [body] * 20)

    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 19
    assert fake_api.ray.submitted == [body["name"]]
    conflict = next(r for r in responses if r.status_code == 409)
    assert body["name"] in conflict.json()["detail"]


def test_twenty_concurrent_posts_of_distinct_names_give_twenty(
    fake_api: InProcessApi,
) -> None:
    names = [f"d-{i}-{secrets.token_hex(3)}" for i in range(20)]

    responses = _post_many(fake_api.url, [TINY | {"name": n} for n in names])

    assert [r.status_code for r in responses] == [201] * 20
    assert sorted(fake_api.ray.submitted) == sorted(names)
    listed = httpx.get(f"{fake_api.url}/studies", headers=AUTH, params={"limit": 200})
    assert listed.json()["total"] == 20
    page = httpx.get(
        f"{fake_api.url}/studies", headers=AUTH, params={"limit": 8, "offset": 16}
    ).json()
    assert len(page["studies"]) == 4 and page["next_offset"] is None


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (TINY | {"colour": "red"}, "colour", "unknown field"),
        (
            TINY | {"budget": {"weight_steps": 2, "epochs": 3}},
            "budget.epochs",
            "unknown field",
        ),
        (
            TINY | {"initial": {"log10_lr": {"low": -3, "high": -2, "mid": 1}}},
            "initial.log10_lr.mid",
            "unknown field",
        ),
        (TINY | {"initial": {"log10_lr": [-1, -5]}}, "initial.log10_lr", "reversed"),
        (TINY | {"algorithm": "gradient_magic"}, "algorithm", "unknown algorithm"),
        (TINY | {"name": "../etc"}, "name", "1-64 characters of A-Z a-z 0-9"),
        (TINY | {"samples": 5000}, "samples", "at most 1000"),
    ],
    ids=["top", "nested", "deeper", "reversed", "algorithm", "name", "samples"],
)
def test_bad_specs_get_422_naming_field_and_value(
    fake_api: InProcessApi, body: dict, field: str, message: str
) -> None:
    response = httpx.post(f"{fake_api.url}/studies", headers=AUTH, json=body)

    assert response.status_code == 422, response.text
    problems = response.json()["problems"]
    assert any(p["field"] == field and message in p["message"] for p in problems), (
        problems
    )
    assert fake_api.ray.submitted == []


def test_nan_is_refused_with_422(fake_api: InProcessApi) -> None:
    raw = json.dumps(TINY).replace(
        '"samples": 2', '"samples": 2, "resources": {"cpu": NaN}'
    )

    response = httpx.post(
        f"{fake_api.url}/studies",
        headers=AUTH | {"Content-Type": "application/json"},
        content=raw,
    )

    assert response.status_code == 422
    (problem,) = response.json()["problems"]
    assert problem["field"] == "resources.cpu" and problem["value"] == "nan"


def test_form_body_gets_415_and_json_types_are_accepted(
    fake_api: InProcessApi,
) -> None:
    raw = json.dumps(TINY | {"name": "typed"})

    def post(content_type: str | None) -> httpx.Response:
        headers = AUTH | ({"Content-Type": content_type} if content_type else {})
        return httpx.post(f"{fake_api.url}/studies", headers=headers, content=raw)

    form = post("application/x-www-form-urlencoded")
    assert form.status_code == 415
    assert "application/json" in form.json()["detail"]
    assert fake_api.ray.submitted == []
    assert post("application/json; charset=utf-8").status_code == 201


def test_oversized_body_gets_413(fake_api: InProcessApi) -> None:
    body = TINY | {"name": "x" * 100_000}
    response = httpx.post(f"{fake_api.url}/studies", headers=AUTH, json=body)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}],
    ids=["none", "wrong", "basic"],
)
def test_token_is_required_except_for_health(
    fake_api: InProcessApi, headers: dict
) -> None:
    for path in ("/studies", "/algorithms", "/datasets", "/studies/x/events"):
        response = httpx.get(f"{fake_api.url}{path}", headers=headers)
        assert response.status_code == 401, path
    assert (
        httpx.post(f"{fake_api.url}/studies", headers=headers, json=TINY).status_code
        == 401
    )
    assert httpx.get(f"{fake_api.url}/healthz").status_code == 200


def test_catalog_and_docs(fake_api: InProcessApi) -> None:
    algorithms = httpx.get(f"{fake_api.url}/algorithms", headers=AUTH).json()
    assert "ours_lr" in [a["id"] for a in algorithms["algorithms"]]
    datasets = httpx.get(f"{fake_api.url}/datasets", headers=AUTH).json()
    assert "uci_energy" in [d["id"] for d in datasets["datasets"]]
    assert httpx.get(f"{fake_api.url}/docs").status_code == 200
    assert httpx.get(f"{fake_api.url}/studies/nope", headers=AUTH).status_code == 404


def test_redis_down_gives_503_and_creates_nothing(key_prefix: str) -> None:
    with LocalRedis() as local:
        settings = fake_settings(local.url, f"{key_prefix}-down")
        with InProcessApi(settings) as server:
            assert httpx.get(f"{server.url}/readyz").status_code == 200
            redis.Redis.from_url(local.url).shutdown(nosave=True)
            time.sleep(0.2)

            ready = httpx.get(f"{server.url}/readyz", timeout=30)
            posted = httpx.post(
                f"{server.url}/studies",
                headers=AUTH,
                json=TINY | {"name": "down"},
                timeout=30,
            )

            assert ready.status_code == 503 and "Redis" in ready.json()["detail"]
            assert posted.status_code == 503 and "Redis" in posted.json()["detail"]
            assert server.ray.submitted == []


def _stream_connections(url: str) -> int:
    clients = redis.Redis.from_url(url).client_list()
    return sum(c.get("name") == "hposvc-stream" for c in clients)


def test_dropped_streams_release_readers_and_connections(
    fake_api: InProcessApi, redis_url: str
) -> None:
    study_id = httpx.post(
        f"{fake_api.url}/studies",
        headers=AUTH,
        json=TINY | {"name": f"s-{secrets.token_hex(3)}"},
    ).json()["study_id"]
    baseline = _stream_connections(redis_url)

    async def connect_and_drop() -> None:
        async with (
            httpx.AsyncClient(base_url=fake_api.url, headers=AUTH) as http,
            http.stream("GET", f"/studies/{study_id}/events") as response,
        ):
            assert response.status_code == 200
            async for _ in response.aiter_bytes():
                break  # the first frame arrived: the reader is running

    async def hundred() -> None:
        await asyncio.gather(*(connect_and_drop() for _ in range(100)))

    asyncio.run(hundred())

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if (
            fake_api.service.streams.open == 0
            and _stream_connections(redis_url) == baseline
        ):
            break
        time.sleep(0.2)
    assert fake_api.service.streams.open == 0
    assert _stream_connections(redis_url) == baseline


def test_streams_beyond_the_limit_get_429(redis_url: str, key_prefix: str) -> None:
    settings = fake_settings(redis_url, f"{key_prefix}-limit", max_streams=1)
    with (
        InProcessApi(settings) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http,
    ):
        study_id = http.post("/studies", json=TINY | {"name": "lim"}).json()["study_id"]
        with http.stream("GET", f"/studies/{study_id}/events") as first:
            chunks = first.iter_bytes()  # kept: dropping it closes the stream
            next(chunks)
            second = httpx.get(
                f"{server.url}/studies/{study_id}/events", headers=AUTH, timeout=10
            )
            assert second.status_code == 429
    StudyStore.from_url(redis_url, f"{key_prefix}-limit").delete_prefix()


def test_events_are_strict_json_with_non_finite_flagged(
    fake_api: InProcessApi, redis_url: str
) -> None:
    with httpx.Client(base_url=fake_api.url, headers=AUTH, timeout=30) as http:
        study_id = http.post("/studies", json=TINY | {"name": "nan-1"}).json()[
            "study_id"
        ]
        store = StudyStore.from_url(redis_url, fake_api.service.settings.key_prefix)
        store.append(study_id, {"type": "study_started", "study_id": study_id})
        store.append(
            study_id,
            {
                "type": "trial_result",
                "index": 0,
                "metrics": {"validation_loss": float("nan")},
            },
        )
        store.append(study_id, {"type": "study_failed", "error": "diverged"})

        events = read_events(http, study_id)
        assert [e["type"] for _, e in events] == [
            "study_started",
            "trial_result",
            "study_failed",
        ]
        metrics = events[1][1]["metrics"]
        assert metrics["validation_loss"] is None
        assert metrics["non_finite"] == ["validation_loss"]
        # Refused after the terminal event: the stream ends with it.
        assert store.append(study_id, {"type": "trial_result", "index": 0}) is None
        assert http.get(f"/studies/{study_id}").json()["status"] == "failed"

"""Fixtures of the service tests: a real Ray head, real Redis, the API as a process.

The Ray head is started once per session by ``ray start --head --block`` on
free loopback ports (never 6379) with Ray's token authentication as Ray sets
it up, and stopped by signalling that process only. These tests never use the
in-process ``ray_session`` of the root conftest. Redis is the one on
127.0.0.1:6379 (``HPOSVC_TEST_REDIS_URL`` to change it); each session writes
under its own key prefix and deletes it at the end.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from hposvc.service import LocalRayHead, free_port
from hposvc.store import StudyStore
from tests.api.support import API_TOKEN, ApiProcess, InProcessApi, fake_settings

REDIS_URL = os.environ.get("HPOSVC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        pytest.skip(f"no Redis at {REDIS_URL}: {error}")
    return REDIS_URL


@pytest.fixture(scope="session")
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"hposvc-test-{secrets.token_hex(4)}"
    yield prefix
    StudyStore.from_url(redis_url, prefix).delete_prefix()


@pytest.fixture(scope="session")
def ray_head(shared_data: Path) -> Iterator[LocalRayHead]:
    head = LocalRayHead(
        port=free_port(),
        dashboard_port=free_port(),
        num_cpus=2,
        object_store_bytes=200 * 2**20,
    )
    with head:
        yield head


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="session")
def api_env(
    ray_head: LocalRayHead, redis_url: str, key_prefix: str, results_dir: Path,
    shared_data: Path,
) -> dict[str, str]:  # fmt: skip
    return {
        "REDIS_URL": redis_url,
        "HPOSVC_KEY_PREFIX": key_prefix,
        "HPOSVC_RAY_ADDRESS": ray_head.address,
        "HPOSVC_RAY_JOBS_URL": ray_head.jobs_url,
        "HPOSVC_DATA_DIR": str(shared_data),
        "HPOSVC_RESULTS_DIR": str(results_dir),
        "HPOSVC_API_TOKEN": API_TOKEN,
        "HPOSVC_HEARTBEAT_SECONDS": "1",
        "HPOSVC_RECONCILE_SECONDS": "1",
    }


@pytest.fixture(scope="session")
def api(api_env: dict[str, str]) -> Iterator[ApiProcess]:
    server = ApiProcess(api_env, free_port()).start()
    yield server
    server.stop()


@pytest.fixture()
def client(api: ApiProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=api.url, headers=headers, timeout=60) as http:
        yield http


@pytest.fixture()
def fake_api(redis_url: str, key_prefix: str) -> Iterator[InProcessApi]:
    prefix = f"{key_prefix}-fake-{secrets.token_hex(3)}"
    with InProcessApi(fake_settings(redis_url, prefix)) as server:
        yield server
    StudyStore.from_url(redis_url, prefix).delete_prefix()

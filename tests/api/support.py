"""Helpers of the service tests: the API as a process or a thread, SSE reading."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from hposvc.client import parse_sse
from hposvc.errors import NotFoundError
from hposvc.service import free_port
from hposvc.settings import ServiceSettings

API_TOKEN = "test-token-" + secrets.token_hex(8)
TINY = {
    "dataset": "uci_energy",
    "algorithm": "random",
    "samples": 2,
    "budget": {"hyperparameter_steps": 3, "weight_steps": 2},
}
TERMINAL = ("study_completed", "study_failed", "study_cancelled")


class ApiProcess:
    """The API under uvicorn in a child process, so a test can SIGKILL it."""

    def __init__(self, env: dict[str, str], port: int):
        self.env, self.port = env, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ApiProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            env=os.environ | self.env,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"API exited with {self.process.returncode}")
            time.sleep(0.3)
        raise RuntimeError("API did not start within 90 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class FakeRayJobs:
    """Stands in for Ray where a test is about the API, not about running studies."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.resumed: list[str] = []
        self.stopped: list[str] = []
        self.job_status = "RUNNING"
        self.lock = threading.Lock()

    def connect(self) -> None:
        return None

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0}

    def check(self) -> None:
        return None

    def submit(self, study_id: str, *, submission_id: str, resume: bool = False) -> str:
        with self.lock:
            (self.resumed if resume else self.submitted).append(submission_id)
        return submission_id

    def status(self, job_id: str) -> str:
        if self.job_status == "GONE":
            raise NotFoundError(f"no Ray job {job_id!r}")
        return self.job_status

    def message(self, job_id: str) -> str:
        return ""

    def stop(self, job_id: str) -> None:
        with self.lock:
            self.stopped.append(job_id)


class InProcessApi:
    """The API under uvicorn in a thread of the test process, with fake Ray."""

    def __init__(self, settings: ServiceSettings):
        import uvicorn

        from api.app import create_app

        self.ray = FakeRayJobs()
        self.app = create_app(settings, ray_jobs=self.ray)  # type: ignore[arg-type]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> InProcessApi:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("in-process API did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    @property
    def service(self) -> Any:
        return self.app.state.service


def fake_settings(redis_url: str, prefix: str, **extra: Any) -> ServiceSettings:
    return ServiceSettings.model_validate(
        {
            "REDIS_URL": redis_url,
            "key_prefix": prefix,
            "api_token": API_TOKEN,
            "heartbeat_seconds": 0.5,
            "reconcile_seconds": 60,
        }
        | extra
    )


def read_events(
    client: httpx.Client,
    study_id: str,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    timeout: float = 180,
) -> list[tuple[str, dict[str, Any]]]:
    """Events after ``last_event_id``, to the terminal one or ``stop_after`` many."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream(
        "GET",
        f"/studies/{study_id}/events",
        headers=headers,
        timeout=httpx.Timeout(10, read=timeout),
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event_id, kind, data in parse_sse(response.iter_lines()):
            if event_id is None:
                continue
            event = json.loads(data)
            assert event["type"] == kind
            events.append((event_id, event))
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


def stream_key(event_id: str) -> tuple[int, int]:
    millis, sequence = event_id.split("-")
    return int(millis), int(sequence)

"""API latency: POST /studies under concurrent clients, and event delivery.

Runs the API under uvicorn in a child process against a real Redis, with Ray
Job submission stubbed out (the figure is the API's own cost: validation,
the atomic create in Redis, the response; submitting a Ray Job adds the Jobs
API's round trip, about tens of milliseconds on a local head). Then:

1. ``--posts`` studies are POSTed by ``--clients`` concurrent clients; p50 and
   p99 of the response time are reported;
2. ``--streams`` clients open one study's event stream, ``--events`` events
   are appended to its Redis stream (each carrying the time of the append),
   and the delay from append to receipt is reported over every client and
   event.

    python benchmarks/api_latency.py --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hposvc.client import parse_sse  # noqa: E402
from hposvc.service import free_port  # noqa: E402
from hposvc.store import StudyStore  # noqa: E402

TOKEN = "bench-" + secrets.token_hex(8)
TINY = {
    "dataset": "uci_energy",
    "algorithm": "random",
    "samples": 2,
    "budget": {"hyperparameter_steps": 3, "weight_steps": 2},
}


class _StubRayJobs:
    def connect(self) -> None:
        return None

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0}

    def check(self) -> None:
        return None

    def submit(self, study_id: str, *, submission_id: str) -> str:
        return submission_id

    def status(self, job_id: str) -> str:
        return "RUNNING"

    def message(self, job_id: str) -> str:
        return ""

    def stop(self, job_id: str) -> None:
        return None


def serve_stub(port: int) -> None:
    """Child process: the API with stubbed Ray Jobs."""
    import uvicorn

    from api.app import create_app

    app = create_app(ray_jobs=_StubRayJobs())  # type: ignore[arg-type]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def post_latency(url: str, posts: int, clients: int) -> list[float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(posts):
        queue.put_nowait(index)
    timings: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        # The first request opens the connection; it is not timed.
        await http.get("/healthz")
        while not queue.empty():
            index = queue.get_nowait()
            body = TINY | {"name": f"bench-{index}-{secrets.token_hex(3)}"}
            started = time.perf_counter()
            response = await http.post("/studies", json=body)
            timings.append(time.perf_counter() - started)
            if response.status_code != 201:
                raise RuntimeError(response.text)

    # Every client exists before the first request: building one (httpx loads
    # its TLS context) blocks the event loop for tens of milliseconds, which
    # would otherwise be charged to the requests already in flight.
    async with contextlib.AsyncExitStack() as stack:
        https = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, headers=headers)
            )
            for _ in range(clients)
        ]
        await asyncio.gather(*(client(http) for http in https))
    return timings


async def event_latency(
    url: str, store: StudyStore, streams: int, events: int
) -> list[float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        created = await http.post("/studies", json=TINY | {"name": "bench-stream"})
        study_id = created.json()["study_id"]
    store.append(study_id, {"type": "study_started", "study_id": study_id})
    delays: list[float] = []
    ready = asyncio.Event()
    connected = 0

    async def listener() -> None:
        nonlocal connected
        timeout = httpx.Timeout(10, read=120)
        async with (
            httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout) as http,
            http.stream("GET", f"/studies/{study_id}/events") as response,
        ):
            lines = response.aiter_lines()
            connected += 1
            if connected == streams:
                ready.set()
            async for _, kind, data in _aparse(lines):
                received = time.time()
                event = json.loads(data)
                if "sent" in event:
                    delays.append(received - event["sent"])
                if kind == "study_completed":
                    return

    tasks = [asyncio.create_task(listener()) for _ in range(streams)]
    await asyncio.wait_for(ready.wait(), 60)
    await asyncio.sleep(0.5)
    for step in range(events):
        event = {"type": "trial_result", "index": 0, "metrics": {"step": step}}
        await asyncio.to_thread(store.append, study_id, event | {"sent": time.time()})
        await asyncio.sleep(0.02)
    store.append(study_id, {"type": "study_completed", "study_id": study_id})
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return delays


async def _aparse(lines: Any) -> Any:
    buffered: list[str] = []
    async for line in lines:
        buffered.append(line)
        if line == "":
            for frame in parse_sse(iter(buffered)):
                if frame[0] is not None:
                    yield frame
            buffered = []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--serve-stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        serve_stub(args.serve_stub)
        return 0

    prefix = f"hposvc-bench-{secrets.token_hex(4)}"
    port = free_port()
    env = os.environ | {
        "REDIS_URL": args.redis_url,
        "HPOSVC_KEY_PREFIX": prefix,
        "HPOSVC_API_TOKEN": TOKEN,
        "HPOSVC_HEARTBEAT_SECONDS": "5",
        "HPOSVC_RECONCILE_SECONDS": "3600",
    }
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-stub", str(port)], env=env, cwd=REPO
    )
    store = StudyStore.from_url(args.redis_url, prefix)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        asyncio.run(post_latency(url, 40, args.clients))  # warm-up
        posts = asyncio.run(post_latency(url, args.posts, args.clients))
        delays = asyncio.run(event_latency(url, store, args.streams, args.events))
    finally:
        server.terminate()
        server.wait(20)
        store.delete_prefix()

    print(
        f"POST /studies, {args.clients} concurrent clients, {len(posts)} requests: "
        f"p50 {statistics.median(posts) * 1000:.1f} ms, "
        f"p99 {percentile(posts, 0.99) * 1000:.1f} ms"
    )
    print(
        f"event delivery, {args.streams} open streams, {len(delays)} receipts: "
        f"p50 {statistics.median(delays) * 1000:.1f} ms, "
        f"p99 {percentile(delays, 0.99) * 1000:.1f} ms, "
        f"max {max(delays) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

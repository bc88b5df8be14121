"""The same API deployed on Ray Serve answers and runs a study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from hposvc.service import LocalRayHead, free_port
from tests.api.support import API_TOKEN, TINY

DEPLOY = textwrap.dedent(
    """
    import json, os, sys
    import ray
    from ray import serve
    from api.ray_jobs import RayJobs
    from api.serve import deployment
    from hposvc.settings import ServiceSettings

    settings = ServiceSettings()
    RayJobs(settings)._use_ray_token()
    ray.init(address=settings.ray_address, log_to_driver=False)
    port = int(sys.argv[1])
    if sys.argv[2] == "shutdown":
        serve.shutdown()
    else:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(deployment(settings), name="hposvc", route_prefix="/")
    """
)


def _run(env: dict[str, str], port: int, action: str) -> None:
    subprocess.run(
        [sys.executable, "-c", DEPLOY, str(port), action],
        env=os.environ | env,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
        timeout=180,
    )


def test_serve_deployment_answers_and_accepts_a_study(
    api_env: dict[str, str], ray_head: LocalRayHead
) -> None:
    port = free_port()
    _run(api_env, port, "run")
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            created = http.post("/studies", json=TINY | {"name": "on-serve"})
            assert created.status_code == 201, created.text
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                study = http.get("/studies/on-serve").json()
                if study["status"] not in ("pending", "running"):
                    break
                time.sleep(1)
            assert study["status"] == "completed", json.dumps(study)
    finally:
        _run(api_env, port, "shutdown")

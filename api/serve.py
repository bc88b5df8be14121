"""The API as a Ray Serve deployment, for clusters.

``serve run api.serve:app_builder`` (or :func:`deployment` from Python) hosts
the same FastAPI app as ``hposvc serve``, in a replica that reserves no CPU,
so every CPU stays with the trials. The replica reads its settings from its
environment (give them in the deployment's ``runtime_env``); it is already
part of the cluster, so it submits studies as Ray Jobs of that cluster.
Server-sent events stream through Serve's proxy unbuffered.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from api.app import create_app
from hposvc.settings import ServiceSettings

__all__ = ["app_builder", "deployment"]


def deployment(settings: ServiceSettings | None = None) -> Any:
    """A bound Serve application of the API with ``settings`` (default: env)."""
    app = create_app(settings)

    @serve.deployment(
        name="hposvc-api",
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=2000,
    )
    @serve.ingress(app)
    class HposvcApi:
        """The hposvc REST API and event streams."""

    return HposvcApi.bind()  # type: ignore[attr-defined]


def app_builder(args: dict[str, str]) -> Any:
    """Entry point for ``serve run api.serve:app_builder``; ``args`` are unused."""
    return deployment()

"""Settings of the hposvc service: one pydantic-settings class, from the environment.

Every field is read from ``HPOSVC_<FIELD>`` (``HPOSVC_API_TOKEN``,
``HPOSVC_RAY_ADDRESS``, ...), except the Redis URL, which is ``REDIS_URL``.
The API, the Ray Job entrypoint (:mod:`hposvc.job`) and ``hposvc serve`` all
build their settings here; the API hands the job what it needs through the
job's runtime environment.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["QUIET_RAY", "ServiceSettings", "is_loopback"]

#: Ray's own chatter that says nothing to an hposvc user; entry points (the
#: CLI, each study's Ray Job) set these before Ray starts.
QUIET_RAY = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "1",
    # The legacy reporter honours RunConfig(verbose=0); the new one does not.
    "RAY_AIR_NEW_OUTPUT": "0",
}


class ServiceSettings(BaseSettings):
    """How the service is wired and what it accepts.

    Attributes:
        redis_url: Redis holding studies and event streams. ``None`` lets
            ``hposvc serve`` start one locally.
        key_prefix: Prefix of every Redis key; several services (or test
            runs) can share one Redis under different prefixes.
        ray_address: GCS address of the Ray cluster (``host:port``). ``None``
            lets ``hposvc serve`` start a local head.
        ray_jobs_url: The Ray dashboard's Jobs API (``http://host:port``).
        ray_auth_token: Ray's cluster token (Ray's own ``RAY_AUTH_TOKEN``);
            with ``ray_auth_token_path`` unset too, Ray's default token file
            is used when it exists.
        ray_auth_token_path: A file holding Ray's cluster token.
        api_token: When set, every endpoint but the health checks asks for
            ``Authorization: Bearer <token>``.
        host, port: Where ``hposvc serve`` listens. Without ``api_token`` only
            a loopback host is allowed.
        job_python: The Python that runs each study's Ray Job driver
            (default: this interpreter).
        data_dir, results_dir: Passed to the job as ``HPOSVC_DATA_DIR`` and
            ``HPOSVC_RESULTS_DIR`` when set.
        max_body_bytes: Largest accepted request body (413 above).
        max_samples: Most trials one submitted study may ask for (422 above).
        max_streams: Most event streams open at once (429 above).
        heartbeat_seconds: Idle time after which an event stream sends a
            comment line to keep proxies from closing it.
        stream_maxlen: Approximate cap of events kept per study stream.
        reconcile_seconds: How often running studies are checked against
            their Ray Jobs (a job that died without a final event).
    """

    model_config = SettingsConfigDict(env_prefix="HPOSVC_", extra="ignore")

    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "HPOSVC_REDIS_URL")
    )
    key_prefix: str = Field("hposvc", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    ray_address: str | None = None
    ray_jobs_url: str = "http://127.0.0.1:8265"
    ray_auth_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("RAY_AUTH_TOKEN", "HPOSVC_RAY_AUTH_TOKEN")
    )
    ray_auth_token_path: Path | None = Field(
        None,
        validation_alias=AliasChoices(
            "RAY_AUTH_TOKEN_PATH", "HPOSVC_RAY_AUTH_TOKEN_PATH"
        ),
    )
    api_token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    job_python: str | None = None
    data_dir: Path | None = None
    results_dir: Path | None = None
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    max_samples: int = Field(1000, ge=1)
    max_streams: int = Field(1000, ge=1)
    heartbeat_seconds: float = Field(15.0, gt=0.0, le=300.0)
    stream_maxlen: int = Field(1_000_000, ge=1000)
    reconcile_seconds: float = Field(5.0, gt=0.0)

    def ray_token(self) -> str | None:
        """Ray's cluster token, or ``None`` when Ray runs without token auth."""
        if self.ray_auth_token is not None:
            return self.ray_auth_token.get_secret_value()
        path = self.ray_auth_token_path or Path.home() / ".ray" / "auth_token"
        if path.is_file():
            return path.read_text().strip() or None
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

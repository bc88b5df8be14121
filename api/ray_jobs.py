"""The API's side of Ray: the cluster's resources and each study's Ray Job.

Each study runs as a Ray Job whose submission id is the study id (and
``<id>--resume-<n>`` for its ``n``-th resume), so it keeps running when the
API restarts and shows in the Ray dashboard. The Jobs API
and the GCS are reached with Ray's cluster token when Ray has token
authentication on (the default in Ray 2.60); hposvc never turns it off.
All methods block: the API calls them from worker threads.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from hposvc.errors import NotFoundError, UnavailableError
from hposvc.settings import QUIET_RAY, ServiceSettings
from hposvc.study import default_results_dir

__all__ = ["JOB_TERMINAL", "RayJobs"]

logger = logging.getLogger(__name__)

JOB_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class RayJobs:
    """Ray as the API uses it: connect once, then submit, stop and ask."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Attach this process to the cluster as a driver (idempotent)."""
        import ray

        with self._lock:
            if ray.is_initialized():
                return
            self._use_ray_token()
            in_main_thread = threading.current_thread() is threading.main_thread()
            previous = signal.getsignal(signal.SIGTERM) if in_main_thread else None
            try:
                ray.init(
                    address=self.settings.ray_address or "auto",
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    namespace="hposvc-api",
                )
            except Exception as error:
                raise UnavailableError(f"Ray is unreachable: {error}") from None
            finally:
                # ray.init replaces SIGTERM's handler; uvicorn needs its own.
                if in_main_thread:
                    signal.signal(signal.SIGTERM, previous)

    def _use_ray_token(self) -> None:
        """Give this process's Ray core the cluster token, when there is one."""
        token = self.settings.ray_token()
        if token is None or os.environ.get("RAY_AUTH_MODE") == "disabled":
            return
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ.setdefault("RAY_AUTH_TOKEN", token)
        # Ray reads its auth mode once per process; refresh it as `ray.init` does
        # for a local cluster (a private API of Ray 2.60: ray is pinned <2.61).
        try:
            from ray._raylet import (  # type: ignore[attr-defined]
                AuthenticationTokenLoader,
                Config,
            )

            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()
        except (ImportError, AttributeError) as error:
            logger.warning("could not refresh Ray's auth settings: %s", error)

    def cluster_resources(self) -> dict[str, float]:
        import ray

        self.connect()
        try:
            return dict(ray.cluster_resources())
        except Exception as error:
            raise UnavailableError(f"Ray is unreachable: {error}") from None

    def client(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        with self._lock:
            if self._client is None:
                token = self.settings.ray_token()
                headers = {"Authorization": f"Bearer {token}"} if token else None
                try:
                    self._client = JobSubmissionClient(
                        self.settings.ray_jobs_url, headers=headers
                    )
                except Exception as error:
                    raise UnavailableError(
                        f"Ray's Jobs API at {self.settings.ray_jobs_url} is "
                        f"unreachable: {error}"
                    ) from None
            return self._client

    def check(self) -> None:
        """Raise :class:`UnavailableError` unless the GCS and Jobs API answer."""
        self.cluster_resources()
        try:
            self.client().get_version()
        except UnavailableError:
            raise
        except Exception as error:
            raise UnavailableError(f"Ray's Jobs API: {error}") from None

    def submit(self, study_id: str, *, submission_id: str, resume: bool = False) -> str:
        """Start the study's job; ``resume`` continues it from its checkpoints."""
        python = self.settings.job_python or sys.executable
        command = [python, "-m", "hposvc.job", "--study-id", study_id]
        entrypoint = shlex.join([*command, "--resume"] if resume else command)
        try:
            return str(
                self.client().submit_job(
                    entrypoint=entrypoint,
                    submission_id=submission_id,
                    runtime_env={"env_vars": self.job_environment()},
                    metadata={"hposvc_study": study_id},
                )
            )
        except UnavailableError:
            raise
        except Exception as error:
            raise UnavailableError(f"Ray refused the job: {error}") from None

    def job_environment(self) -> dict[str, str]:
        settings = self.settings
        env = dict(QUIET_RAY)  # Ray's chatter stays out of the job's logs
        env["REDIS_URL"] = str(settings.redis_url)
        env["HPOSVC_KEY_PREFIX"] = settings.key_prefix
        env["HPOSVC_STREAM_MAXLEN"] = str(settings.stream_maxlen)
        # A job's working directory is Ray's, not the API's: paths go absolute.
        for name, path in (
            ("HPOSVC_DATA_DIR", settings.data_dir),
            ("HPOSVC_RESULTS_DIR", settings.results_dir),
            ("HPOSVC_CONFIG_DIR", None),
        ):
            value = str(path) if path else os.environ.get(name)
            if value:
                env[name] = str(Path(value).resolve())
        # Its results go where the API's own would.
        env.setdefault("HPOSVC_RESULTS_DIR", str(default_results_dir()))
        return env

    def status(self, job_id: str) -> str:
        """The job's status (``PENDING``, ``RUNNING``, ``SUCCEEDED``, ...)."""
        try:
            return str(self.client().get_job_status(job_id).value)
        except UnavailableError:
            raise
        except RuntimeError as error:
            if "does not exist" in str(error) or "404" in str(error):
                raise NotFoundError(f"no Ray job {job_id!r}") from None
            raise UnavailableError(f"Ray's Jobs API: {error}") from None
        except Exception as error:
            raise UnavailableError(f"Ray's Jobs API: {error}") from None

    def message(self, job_id: str) -> str:
        try:
            return str(self.client().get_job_info(job_id).message or "")
        except Exception:
            return ""

    def stop(self, job_id: str) -> None:
        """Stop the job (its Tune driver and so every trial); ended jobs are fine."""
        try:
            self.client().stop_job(job_id)
        except UnavailableError:
            raise
        except Exception as error:
            logger.warning("stopping Ray job %s: %s", job_id, error)

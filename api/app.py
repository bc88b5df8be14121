"""The hposvc REST API: studies, their trials, their live events.

``create_app()`` builds the FastAPI app from :class:`ServiceSettings`; uvicorn
(``hposvc serve``) and Ray Serve (:mod:`api.serve`) host the same app.

``POST /studies/{id}/resume`` continues a failed or cancelled study from its
trials' checkpoints (see :meth:`Service.resume`).

Limits, each refused with a 4xx that says which:

- request bodies above ``HPOSVC_MAX_BODY_BYTES`` (64 KiB): 413;
- study names: 1–64 characters of ``A-Z a-z 0-9 _ . -``, starting with a
  letter or digit (so never a path separator): 422;
- ``samples`` above ``HPOSVC_MAX_SAMPLES`` (1000): 422;
- more than ``HPOSVC_MAX_STREAMS`` (1000) event streams open at once: 429;
- list pages above 200 studies: 422.
"""


# No `from __future__ import annotations` here: Ray Serve's ingress rebuilds the
# endpoints' signatures and needs their annotations evaluated.

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.errors import install_error_handlers
from api.ray_jobs import JOB_TERMINAL, RayJobs
from api.streams import StreamRegistry, parse_last_event_id
from hposvc.errors import (
    ConflictError,
    HposvcError,
    NotFoundError,
    RequestTooLargeError,
    SpecError,
    UnavailableError,
    UnsupportedMediaTypeError,
)
from hposvc.events import json_safe
from hposvc.settings import ServiceSettings
from hposvc.store import (
    ACTIVE_STATUSES,
    RESUMABLE_STATUSES,
    TERMINAL_STATUSES,
    AsyncStudyStore,
    now_iso,
)

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="HPOSVC_API_TOKEN")

#: Final study status for a Ray Job that ended without the study saying so.
_STATUS_OF_JOB = {"SUCCEEDED": "completed", "FAILED": "failed", "STOPPED": "cancelled"}


class Service:
    """What the request handlers share: settings, the store, Ray, open streams."""

    def __init__(self, settings: ServiceSettings, ray_jobs: RayJobs | None = None):
        if not settings.redis_url:
            raise SpecError("REDIS_URL: the API needs a Redis URL")
        self.settings = settings
        self.redis = aioredis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=10,
        )
        self.store = AsyncStudyStore(
            self.redis, settings.key_prefix, maxlen=settings.stream_maxlen
        )
        self.ray = ray_jobs or RayJobs(settings)
        self.streams = StreamRegistry(
            redis_url=settings.redis_url,
            prefix=settings.key_prefix,
            limit=settings.max_streams,
            heartbeat=settings.heartbeat_seconds,
        )

    async def reconcile(self) -> None:
        """Give each study recorded as active whose Ray Job ended its final status."""
        for study_id in await self.store.active_ids():
            await self.reconcile_study(study_id)

    async def reconcile_study(self, study_id: str) -> None:
        """Record the final status of an active study whose current job ended."""
        record = await self.store.get(study_id)
        if record.get("status") in TERMINAL_STATUSES:
            return
        job_id = record.get("job_id") or study_id
        if not record.get("submitted_at") and _age(record) < 60:
            return  # its POST may still be submitting the job
        try:
            job_status = await run_in_threadpool(self.ray.status, job_id)
        except NotFoundError:
            # A Ray head started afresh (a restarted `hposvc serve`) forgets
            # the jobs of the one before it.
            job_status, message = "FAILED", f"Ray job {job_id} is gone from the cluster"
        else:
            if job_status not in JOB_TERMINAL:
                return
            message = await run_in_threadpool(self.ray.message, job_id)
        status = _STATUS_OF_JOB[job_status]
        event: dict[str, Any] = {
            "type": f"study_{status}",
            "study_id": study_id,
            "time": time.time(),
            "reconciled": True,
        }
        if status == "failed":
            event["error"] = (
                f"{message or f'Ray job {job_id} ended as {job_status}'}; continue"
                f" it from its checkpoints with POST /studies/{study_id}/resume"
            )
        if await self.store.append(study_id, event):
            logger.info("study %s: job %s, now %s", study_id, job_status, status)

    async def resume(self, study_id: str) -> dict[str, Any]:
        """Reopen a failed or cancelled study and submit its resuming Ray Job.

        An active study whose job already ended is reconciled first (a job
        that died without a final event makes the study ``failed``). The
        previous job must have ended, so nothing it still sends lands in the
        resumed run.
        """
        record = await self.store.get(study_id)
        if record.get("status") in ACTIVE_STATUSES:
            await self.reconcile_study(study_id)
            record = await self.store.get(study_id)
        if record.get("status") in RESUMABLE_STATUSES:
            await self._check_job_ended(study_id, record)
        resume, job_id, event_id = await self.store.reopen(study_id)
        try:
            await run_in_threadpool(
                self.ray.submit, study_id, submission_id=job_id, resume=True
            )
        except HposvcError as error:
            # Failed again, with the reason, so the study can be resumed later.
            failed = {
                "type": "study_failed",
                "study_id": study_id,
                "time": time.time(),
                "error": f"resume {resume}: {error}",
            }
            await self.store.append(study_id, failed)
            raise
        await self.store.update(study_id, {"submitted_at": now_iso()})
        logger.info("study %s: resume %d as Ray job %s", study_id, resume, job_id)
        return {"resume": resume, "job_id": job_id, "event_id": event_id}

    async def _check_job_ended(self, study_id: str, record: dict[str, str]) -> None:
        """Refuse (409) while the study's last Ray job is still stopping."""
        job_id = record.get("job_id") or study_id
        try:
            job_status = await run_in_threadpool(self.ray.status, job_id)
        except NotFoundError:
            return
        if job_status not in JOB_TERMINAL:
            raise ConflictError(
                f"study {study_id!r} is {record['status']} but its Ray job "
                f"{job_id} is still {job_status}; retry when it has stopped"
            )

    async def reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except HposvcError as error:
                logger.warning("reconciling studies: %s", error)
            except Exception:
                logger.exception("reconciling studies")
            await asyncio.sleep(self.settings.reconcile_seconds)


def _service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(_service)]


def _require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = _service(request).settings.api_token
    if expected is None:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise _Unauthorised()


class _Unauthorised(Exception):
    pass


def create_app(
    settings: ServiceSettings | None = None, *, ray_jobs: RayJobs | None = None
) -> FastAPI:
    """The API; ``settings`` default to the environment's."""
    settings = settings or ServiceSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings, ray_jobs)
        app.state.service = service
        try:
            service.ray.connect()
        except UnavailableError as error:
            logger.warning("%s; /readyz reports it until it answers", error)
        reconciler = asyncio.create_task(service.reconcile_forever())
        try:
            yield
        finally:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler
            await service.redis.aclose()

    app = FastAPI(
        title="hposvc",
        summary="Hyperparameter optimisation studies on Ray, with live events.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.exception_handler(_Unauthorised)
    async def _unauthorised(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    app.include_router(_health_router())
    app.include_router(_studies_router(), dependencies=[Depends(_require_token)])
    return app


def _health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(service: ServiceDep) -> JSONResponse:
        """Redis and Ray both answer; 503 naming what does not."""
        problems = []
        try:
            await service.store.ping()
        except UnavailableError as error:
            problems.append(str(error))
        try:
            async with asyncio.timeout(10):
                await run_in_threadpool(service.ray.check)
        except (UnavailableError, TimeoutError) as error:
            problems.append(str(error) or "Ray did not answer within 10 s")
        if problems:
            return JSONResponse(
                {"status": "unavailable", "detail": "; ".join(problems)},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"status": "ready"})

    return router


def _studies_router() -> APIRouter:
    router = APIRouter()

    @router.post("/studies", status_code=201, tags=["studies"])
    async def submit_study(
        request: Request, response: Response, service: ServiceDep
    ) -> dict[str, Any]:
        """Submit a study (a StudySpec, as for ``hposvc submit``); runs as a Ray Job."""
        from hposvc.spec import resolve_spec
        from hposvc.study import check_resources, new_study_id

        body = await _read_json(request, service.settings.max_body_bytes)
        samples = body.get("samples")
        limit = service.settings.max_samples
        if isinstance(samples, int) and samples > limit:
            raise SpecError(
                f"samples = {samples}: at most {limit} trials per study here",
                problems=[
                    {
                        "field": "samples",
                        "value": samples,
                        "message": f"at most {limit} (HPOSVC_MAX_SAMPLES)",
                    }
                ],
            )
        spec = await run_in_threadpool(resolve_spec, body)
        resources = await run_in_threadpool(service.ray.cluster_resources)
        check_resources(spec, resources)
        study_id = new_study_id(spec)
        await service.store.create(study_id, spec.model_dump(mode="json"))
        try:
            await run_in_threadpool(
                service.ray.submit, study_id, submission_id=study_id
            )
        except HposvcError:
            # No half-created study: the record goes when its job cannot start.
            with contextlib.suppress(UnavailableError):
                await service.store.delete(study_id)
            raise
        await service.store.update(study_id, {"submitted_at": now_iso()})
        response.headers["Location"] = f"/studies/{study_id}"
        return {"study_id": study_id, "status": "pending", "links": _links(study_id)}

    @router.get("/studies", tags=["studies"])
    async def list_studies(
        service: ServiceDep,
        status: Annotated[
            str | None, Query(pattern=r"^(pending|running|completed|failed|cancelled)$")
        ] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """Studies, newest first; ``status`` filters, ``offset``/``limit`` page."""
        page, total = await service.store.list_studies(
            status=status, offset=offset, limit=limit
        )
        for study in page:
            study["links"] = _links(study["study_id"])
        more = offset + len(page) < total
        return {
            "studies": page,
            "total": total,
            "offset": offset,
            "limit": limit,
            "next_offset": offset + len(page) if more else None,
        }

    @router.get("/studies/{study_id}", tags=["studies"])
    async def get_study(study_id: str, service: ServiceDep) -> dict[str, Any]:
        """Status, progress (trials done / total), best trial so far, times, spec."""
        view = await service.store.view(study_id)
        return view | {"links": _links(study_id)}

    @router.get("/studies/{study_id}/trials", tags=["studies"])
    async def get_trials(study_id: str, service: ServiceDep) -> dict[str, Any]:
        """One record per trial (as in summary.json), live while the study runs."""
        await service.store.get(study_id)
        trials = await service.store.trials(study_id)
        return json_safe({"study_id": study_id, "trials": trials})

    @router.get(
        "/studies/{study_id}/events",
        tags=["studies"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream_events(
        study_id: str,
        service: ServiceDep,
        last_event_id: Annotated[str | None, Header()] = None,
        after: Annotated[str | None, Query(description="as Last-Event-ID")] = None,
    ) -> StreamingResponse:
        """Server-sent events of the study, ending after its terminal event.

        Each event's ``id`` is its position in the stream; reconnect with
        ``Last-Event-ID`` (or ``?after=``) to get every later event once.
        """
        cursor = parse_last_event_id(last_event_id or after)
        await service.store.get(study_id)
        service.streams.check_capacity()
        return StreamingResponse(
            service.streams.events(study_id, cursor),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.delete("/studies/{study_id}", tags=["studies"])
    async def cancel_study(study_id: str, service: ServiceDep) -> dict[str, Any]:
        """Cancel: stop the study's Ray Job and every trial. Idempotent."""
        record = await service.store.get(study_id)
        if record.get("status") not in TERMINAL_STATUSES:
            event = {
                "type": "study_cancelled",
                "study_id": study_id,
                "time": time.time(),
            }
            # Cancelled first: whatever the dying job still sends is refused.
            await service.store.append(study_id, event)
            await run_in_threadpool(service.ray.stop, record.get("job_id") or study_id)
        view = await service.store.view(study_id)
        return view | {"links": _links(study_id)}

    @router.post("/studies/{study_id}/resume", status_code=202, tags=["studies"])
    async def resume_study(study_id: str, service: ServiceDep) -> dict[str, Any]:
        """Resume a failed or cancelled study from its trials' checkpoints.

        Trials that finished are kept; the others continue from their last
        checkpoints in a new Ray Job (``<id>--resume-<n>``). The event stream
        keeps its history: a ``study_reopened`` event, then the resumed run's
        events. 404 for an unknown study; 409 for one that is pending, running
        or completed, or whose previous job has not stopped yet.
        """
        resumed = await service.resume(study_id)
        view = await service.store.view(study_id)
        return view | {
            "resumed_after_event": resumed["event_id"],
            "links": _links(study_id),
        }

    @router.get("/algorithms", tags=["catalog"])
    async def algorithms() -> dict[str, Any]:
        """Algorithm ids, what each tunes, and their configs/ defaults."""
        from hposvc.catalog import ALGORITHMS

        return {
            "algorithms": [
                {
                    "id": info.id,
                    "summary": info.summary,
                    "tunes": list(info.tuned),
                    "defaults": _defaults(info.id),
                }
                for info in ALGORITHMS.values()
            ]
        }

    @router.get("/datasets", tags=["catalog"])
    async def datasets() -> dict[str, Any]:
        """Data set ids and their configs/ defaults."""
        from hposvc.data import dataset_names

        return {
            "datasets": [
                {"id": name, "defaults": _defaults(name)} for name in dataset_names()
            ]
        }

    return router


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    # No Content-Type is taken as JSON; a form (curl -d without -H) is not.
    media_type = request.headers.get("content-type", "application/json")
    media_type = media_type.split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"Content-Type {media_type!r}: a study spec is sent as application/json"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"request body of {declared} bytes; at most {limit}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestTooLargeError(f"request body above {limit} bytes")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise SpecError(
            f"body: not JSON ({error})",
            problems=[
                {"field": "body", "value": None, "message": f"not JSON: {error}"}
            ],
        ) from None
    if not isinstance(value, dict):
        raise SpecError(
            "body: a study spec is a JSON object",
            problems=[{"field": "body", "value": None, "message": "must be an object"}],
        )
    return value


def _age(record: dict[str, str]) -> float:
    """Seconds since the study was created or last reopened."""
    since = record.get("reopened_at") or record.get("created_at") or now_iso()
    created = datetime.fromisoformat(since)
    return (datetime.now(UTC) - created).total_seconds()


def _links(study_id: str) -> dict[str, str]:
    base = f"/studies/{study_id}"
    return {"self": base, "trials": f"{base}/trials", "events": f"{base}/events"}


def _defaults(name: str) -> dict[str, Any]:
    import yaml

    from hposvc.spec import config_dir

    path = config_dir() / f"{name}.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}

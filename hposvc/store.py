"""Redis as the service's store and event bus.

Keys, under a prefix ``P`` (:attr:`ServiceSettings.key_prefix`):

- ``P:study:<id>`` — hash: the study's record (status, spec, timestamps, the
  Ray job id of its current run, how often it was resumed, error, best trial
  and summary once finished);
- ``P:study:<id>:trials`` — hash: trial index → the trial's record (the
  ``summary.json`` line, kept live while the study runs);
- ``P:study:<id>:events`` — stream: every event of the study, in order; the
  stream id of an entry is the event's id on the API's event stream;
- ``P:studies`` — sorted set of study ids by creation time.

Contract: a study's record is created once, atomically with its index entry,
so a name can be taken by one request only. An event is appended only while
the study is not finished (checked in the same Redis script as the append),
so each run of a study ends with exactly one terminal event and nothing a
cancelled job still sends lands after it. Resuming a failed or cancelled
study (:data:`RESUMABLE_STATUSES`) reopens it: one script checks its status,
appends a ``study_reopened`` event, sets it ``pending`` and gives it a new
job id, ``<id>--resume-<n>`` for its ``n``-th resume, so the stream keeps its
history and the resumed job's events follow. The Ray Job's driver is the
only writer of trial records; the API writes study records (create, cancel,
reconcile, reopen) and terminal events.

:class:`StudyStore` (blocking, redis-py) serves the job and tests;
:class:`AsyncStudyStore` (``redis.asyncio``) serves the API.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis

from hposvc.errors import ConflictError, NotFoundError, UnavailableError
from hposvc.events import json_safe

__all__ = [
    "ACTIVE_STATUSES",
    "RESUMABLE_STATUSES",
    "TERMINAL_EVENTS",
    "TERMINAL_STATUSES",
    "AsyncStudyStore",
    "RedisEventSink",
    "StudyKeys",
    "StudyStore",
    "dumps",
    "now_iso",
    "study_view",
]

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = ("completed", "failed", "cancelled")
ACTIVE_STATUSES = ("pending", "running")
#: A study in one of these may be resumed from its trials' checkpoints; a
#: completed one has nothing left to run. A job that died without saying so
#: is ``failed`` once reconciled.
RESUMABLE_STATUSES = ("failed", "cancelled")
TERMINAL_EVENTS = ("study_completed", "study_failed", "study_cancelled")
TERMINAL_TRIAL_STATES = ("completed", "diverged", "stopped", "failed")

#: Study status set by each study event.
_STATUS_OF_EVENT = {
    "study_started": "running",
    "study_resumed": "running",
    "study_completed": "completed",
    "study_failed": "failed",
    "study_cancelled": "cancelled",
}

# KEYS: record, index.  ARGV: score, id, field, value, ...
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# KEYS: record, stream.  ARGV: force, maxlen, type, event json, field, value, ...
# Refuses (returns false) when the study is unknown, or finished and not forced.
_APPEND = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if ARGV[1] == '0' and (status == 'completed' or status == 'failed'
    or status == 'cancelled') then
  return false
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'type', ARGV[3], 'event', ARGV[4])
if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5)) end
return id
"""

# KEYS: record, stream.  ARGV: maxlen, event json (its resume fields are added).
# Returns {1, n, job id, event id}, or {0, status} when the study may not resume
# (status '' when it does not exist). The statuses are RESUMABLE_STATUSES.
_REOPEN = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, ''} end
if status ~= 'failed' and status ~= 'cancelled' then return {0, status} end
local n = redis.call('HINCRBY', KEYS[1], 'resumes', 1)
local job = redis.call('HGET', KEYS[1], 'study_id') .. '--resume-' .. n
local event = cjson.decode(ARGV[2])
event['resume'] = n
event['job_id'] = job
event['previous_status'] = status
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
  'type', 'study_reopened', 'event', cjson.encode(event))
redis.call('HSET', KEYS[1], 'status', 'pending', 'job_id', job,
  'reopened_at', event['at'], 'submitted_at', '', 'finished_at', '', 'error', '')
return {1, n, job, id}
"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def dumps(value: Any) -> str:
    """Strict JSON: non-finite numbers become null (flagged by ``json_safe``)."""
    return json.dumps(json_safe(value), allow_nan=False, separators=(",", ":"))


class StudyKeys:
    """The Redis keys of one prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.index = f"{prefix}:studies"

    def record(self, study_id: str) -> str:
        return f"{self.prefix}:study:{study_id}"

    def trials(self, study_id: str) -> str:
        return f"{self.prefix}:study:{study_id}:trials"

    def events(self, study_id: str) -> str:
        return f"{self.prefix}:study:{study_id}:events"


def status_fields(event: Mapping[str, Any]) -> dict[str, str]:
    """The study-record fields that a study event changes."""
    status = _STATUS_OF_EVENT.get(str(event.get("type")))
    if status is None:
        return {}
    fields = {"status": status}
    if event.get("type") == "study_resumed":
        fields["resumed_at"] = now_iso()
    elif status == "running":
        fields["started_at"] = now_iso()
    elif status in TERMINAL_STATUSES:
        fields["finished_at"] = now_iso()
        if event.get("error"):
            fields["error"] = str(event["error"])
    return fields


def trial_update(
    record: dict[str, Any] | None, event: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A trial's live record after ``event`` (``None`` when not a trial event)."""
    kind = str(event.get("type", ""))
    if not kind.startswith("trial_") or event.get("index") is None:
        return None
    record = dict(record or {"index": event["index"], "hyperparameter_steps": 0})
    record["trial_id"] = event.get("trial_id")
    if kind == "trial_started":
        record["status"] = "running"
    elif kind == "trial_result":
        metrics = event.get("metrics") or {}
        record["status"] = "running"
        record["final"] = {
            key: metrics.get(key) for key in ("lr", "weight_decay", "momentum")
        }
        record["final_training_loss"] = metrics.get("training_loss")
        record["final_validation_loss"] = metrics.get("validation_loss")
        record["final_test_loss"] = metrics.get("test_loss_original_units")
        record["final_test_loss_normalised"] = metrics.get("test_loss")
        record["hyperparameter_steps"] = metrics.get("hyperparameter_step", 0)
        record["wall_seconds"] = metrics.get("wall_seconds")
    else:
        record["status"] = kind.removeprefix("trial_")
        for key in ("reason", "error"):
            if event.get(key):
                record[key] = event[key]
    return record


def study_view(record: Mapping[str, str], trials: Iterable[Mapping[str, Any]]) -> dict:
    """A study as the API shows it: status, progress, best trial so far, spec."""
    trials = list(trials)
    spec = json.loads(record.get("spec") or "{}")
    samples = int(spec.get("samples") or len(trials) or 0)
    done = sum(t.get("status") in TERMINAL_TRIAL_STATES for t in trials)
    stored_best = record.get("best_trial")
    best = json.loads(stored_best) if stored_best else best_trial(trials)
    return json_safe(
        {
            "study_id": record.get("study_id"),
            "name": record.get("name") or None,
            "status": record.get("status"),
            "progress": {"trials_done": done, "trials_total": samples},
            "best_trial": best,
            "created_at": record.get("created_at") or None,
            "started_at": record.get("started_at") or None,
            "finished_at": record.get("finished_at") or None,
            "error": record.get("error") or None,
            "job_id": record.get("job_id") or None,
            "resumes": int(record.get("resumes") or 0),
            "resumed_at": record.get("resumed_at") or None,
            "summary_path": record.get("summary_path") or None,
            "spec": spec,
        }
    )


def best_trial(trials: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The trial with the lowest finite validation loss that did not fail."""
    finite = [
        t
        for t in trials
        if t.get("status") != "failed"
        and isinstance(t.get("final_validation_loss"), int | float)
        and math.isfinite(t["final_validation_loss"])
    ]
    return min(finite, key=lambda t: t["final_validation_loss"], default=None)


def _flatten(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _new_record(study_id: str, spec: Mapping[str, Any]) -> dict[str, str]:
    return {
        "study_id": study_id,
        "name": str(spec.get("name") or ""),
        "status": "pending",
        "spec": dumps(spec),
        "created_at": now_iso(),
        "job_id": study_id,
    }


class StudyStore:
    """Blocking access to studies in Redis, for the Ray Job and for tests."""

    def __init__(self, client: redis.Redis, prefix: str, *, maxlen: int = 1_000_000):
        # redis-py's precise reply types do not know decode_responses=True.
        self.redis: Any = client
        self.keys = StudyKeys(prefix)
        self.maxlen = maxlen
        self._create = client.register_script(_CREATE)
        self._append = client.register_script(_APPEND)

    @classmethod
    def from_url(cls, url: str, prefix: str, **kwargs: Any) -> StudyStore:
        client = redis.Redis.from_url(url, decode_responses=True)
        return cls(client, prefix, **kwargs)

    def create(self, study_id: str, spec: Mapping[str, Any]) -> None:
        record = _new_record(study_id, spec)
        created = self._create(
            keys=[self.keys.record(study_id), self.keys.index],
            args=[datetime.now(UTC).timestamp(), study_id, *_flatten(record)],
        )
        if not created:
            raise ConflictError(f"study {study_id!r} already exists")

    def get(self, study_id: str) -> dict[str, str]:
        record = self.redis.hgetall(self.keys.record(study_id))
        if not record:
            raise NotFoundError(f"no study {study_id!r}")
        return record

    def spec(self, study_id: str) -> dict[str, Any]:
        return json.loads(self.get(study_id)["spec"])

    def trials(self, study_id: str) -> list[dict[str, Any]]:
        raw = self.redis.hvals(self.keys.trials(study_id))
        return sorted((json.loads(v) for v in raw), key=lambda t: t["index"])

    def events(self, study_id: str) -> list[tuple[str, dict[str, Any]]]:
        entries = self.redis.xrange(self.keys.events(study_id))
        return [(entry_id, json.loads(f["event"])) for entry_id, f in entries]

    def update(self, study_id: str, fields: Mapping[str, str]) -> None:
        self.redis.hset(self.keys.record(study_id), mapping=dict(fields))

    def append(
        self,
        study_id: str,
        event: Mapping[str, Any],
        *,
        force: bool = False,
        fields: Mapping[str, str] | None = None,
    ) -> str | None:
        """Append ``event`` to the study's stream; ``None`` when refused."""
        changes = status_fields(event) | dict(fields or {})
        return self._append(
            keys=[self.keys.record(study_id), self.keys.events(study_id)],
            args=[
                "1" if force else "0",
                self.maxlen,
                str(event["type"]),
                dumps(event),
                *_flatten(changes),
            ],
        )

    def put_trial(self, study_id: str, record: Mapping[str, Any]) -> None:
        self.redis.hset(
            self.keys.trials(study_id), f"{int(record['index']):06d}", dumps(record)
        )

    def trial(self, study_id: str, index: int) -> dict[str, Any] | None:
        raw = self.redis.hget(self.keys.trials(study_id), f"{int(index):06d}")
        return json.loads(raw) if raw else None

    def delete(self, study_id: str) -> None:
        self.redis.delete(
            self.keys.record(study_id),
            self.keys.trials(study_id),
            self.keys.events(study_id),
        )
        self.redis.zrem(self.keys.index, study_id)

    def delete_prefix(self) -> None:
        """Remove every key of this prefix (tests and benchmarks)."""
        for key in self.redis.scan_iter(match=f"{self.keys.prefix}:*", count=500):
            self.redis.delete(key)


class RedisEventSink:
    """An event sink (see :mod:`hposvc.events`) writing one study to Redis.

    Runs in the Ray Job's driver: appends each event to the study's stream
    and keeps the study's record and its trials' records current. An event
    refused because the study already ended (it was cancelled) is dropped.
    """

    def __init__(self, store: StudyStore, study_id: str):
        self.store = store
        self.study_id = study_id
        self.refused = 0

    def __call__(self, event: dict[str, Any]) -> None:
        if self.store.append(self.study_id, event) is None:
            self.refused += 1
            logger.debug("study %s: %s dropped", self.study_id, event.get("type"))
            return
        if event.get("index") is None:
            return
        previous = self.store.trial(self.study_id, int(event["index"]))
        record = trial_update(previous, event)
        if record is not None:
            self.store.put_trial(self.study_id, record)


class AsyncStudyStore:
    """Non-blocking access to studies in Redis, for the API.

    Redis errors surface as :class:`UnavailableError` (HTTP 503).
    """

    def __init__(self, client: aioredis.Redis, prefix: str, *, maxlen: int = 1_000_000):
        # redis-py's precise reply types do not know decode_responses=True.
        self.redis: Any = client
        self.keys = StudyKeys(prefix)
        self.maxlen = maxlen
        self._create = client.register_script(_CREATE)
        self._append = client.register_script(_APPEND)
        self._reopen = client.register_script(_REOPEN)

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except (redis.RedisError, OSError) as error:
            raise UnavailableError(f"Redis is unreachable: {error}") from None

    async def create(self, study_id: str, spec: Mapping[str, Any]) -> dict[str, str]:
        record = _new_record(study_id, spec)
        created = await self._guard(
            self._create(
                keys=[self.keys.record(study_id), self.keys.index],
                args=[datetime.now(UTC).timestamp(), study_id, *_flatten(record)],
            )
        )
        if not created:
            raise ConflictError(f"a study named {study_id!r} already exists")
        return record

    async def get(self, study_id: str) -> dict[str, str]:
        record = await self._guard(self.redis.hgetall(self.keys.record(study_id)))
        if not record:
            raise NotFoundError(f"no study {study_id!r}")
        return record

    async def trials(self, study_id: str) -> list[dict[str, Any]]:
        raw = await self._guard(self.redis.hvals(self.keys.trials(study_id)))
        return sorted((json.loads(v) for v in raw), key=lambda t: t["index"])

    async def view(self, study_id: str) -> dict[str, Any]:
        record = await self.get(study_id)
        return study_view(record, await self.trials(study_id))

    async def list_studies(
        self, *, status: str | None, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Studies, newest first, optionally of one status; and the total count."""
        ids = await self._guard(self.redis.zrevrange(self.keys.index, 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for study_id in ids:
            pipe.hmget(self.keys.record(study_id), "status")
        statuses = await self._guard(pipe.execute())
        chosen = [
            study_id
            for study_id, (state,) in zip(ids, statuses, strict=True)
            if state is not None and (status is None or state == status)
        ]
        page = []
        for study_id in chosen[offset : offset + limit]:
            try:
                page.append(await self.view(study_id))
            except NotFoundError:
                continue
        return page, len(chosen)

    async def active_ids(self) -> list[str]:
        ids = await self._guard(self.redis.zrange(self.keys.index, 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for study_id in ids:
            pipe.hget(self.keys.record(study_id), "status")
        statuses = await self._guard(pipe.execute())
        return [
            study_id
            for study_id, state in zip(ids, statuses, strict=True)
            if state in ACTIVE_STATUSES
        ]

    async def append(
        self,
        study_id: str,
        event: Mapping[str, Any],
        *,
        force: bool = False,
        fields: Mapping[str, str] | None = None,
    ) -> str | None:
        changes = status_fields(event) | dict(fields or {})
        return await self._guard(
            self._append(
                keys=[self.keys.record(study_id), self.keys.events(study_id)],
                args=[
                    "1" if force else "0",
                    self.maxlen,
                    str(event["type"]),
                    dumps(event),
                    *_flatten(changes),
                ],
            )
        )

    async def reopen(self, study_id: str) -> tuple[int, str, str]:
        """Reopen a failed or cancelled study for its next run.

        Appends ``study_reopened`` (with ``resume`` = n, the new ``job_id``
        and ``previous_status``) and sets the study ``pending`` under that job
        id, atomically. Returns ``(n, job id, event id)``. Raises
        :class:`NotFoundError` for an unknown study and :class:`ConflictError`
        naming its status for one that is active or completed.
        """
        event = {
            "type": "study_reopened",
            "study_id": study_id,
            "time": time.time(),
            "at": now_iso(),
        }
        reply = await self._guard(
            self._reopen(
                keys=[self.keys.record(study_id), self.keys.events(study_id)],
                args=[self.maxlen, dumps(event)],
            )
        )
        if int(reply[0]) == 1:
            return int(reply[1]), str(reply[2]), str(reply[3])
        status = str(reply[1])
        if not status:
            raise NotFoundError(f"no study {study_id!r}")
        raise ConflictError(
            f"study {study_id!r} is {status}; only a "
            f"{' or '.join(RESUMABLE_STATUSES)} study can be resumed"
        )

    async def update(self, study_id: str, fields: Mapping[str, str]) -> None:
        await self._guard(
            self.redis.hset(self.keys.record(study_id), mapping=dict(fields))
        )

    async def delete(self, study_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(
            self.keys.record(study_id),
            self.keys.trials(study_id),
            self.keys.events(study_id),
        )
        pipe.zrem(self.keys.index, study_id)
        await self._guard(pipe.execute())

    @staticmethod
    async def _guard(awaitable: Any) -> Any:
        try:
            return await awaitable
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            raise UnavailableError(f"Redis is unreachable: {error}") from None

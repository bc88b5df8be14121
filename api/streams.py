"""Server-sent events from a study's Redis stream.

Each open stream holds one Redis connection of its own (named
``hposvc-stream`` in ``CLIENT LIST``), blocked in ``XREAD`` for at most the
heartbeat interval. The SSE ``id`` of an event is its Redis stream id, so a
client reconnecting with ``Last-Event-ID`` resumes right after the last event
it saw, with no gap and no repeat. A stream ends after the study's terminal
event; when the client goes away the reader is cancelled and its connection
closed. :class:`StreamRegistry` counts open streams and enforces the limit.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import redis
import redis.asyncio as aioredis

from hposvc.errors import CapacityError, SpecError
from hposvc.store import TERMINAL_EVENTS, StudyKeys

__all__ = ["StreamRegistry", "parse_last_event_id"]

logger = logging.getLogger(__name__)

STREAM_CLIENT_NAME = "hposvc-stream"
#: Extra seconds a blocked XREAD may take to answer before Redis counts as lost.
STREAM_READ_MARGIN_S = 10.0
_EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def parse_last_event_id(value: str | None) -> str:
    """The stream id to read after: ``0-0`` (from the start) when none is given."""
    if value is None or value == "":
        return "0-0"
    if not _EVENT_ID.match(value):
        raise SpecError(
            f"Last-Event-ID = {value!r}: an event id is two numbers, 'ms-seq'"
        )
    return value


class StreamRegistry:
    """Open event streams of this API process, at most ``limit`` at once."""

    def __init__(self, *, redis_url: str, prefix: str, limit: int, heartbeat: float):
        self.redis_url = redis_url
        self.keys = StudyKeys(prefix)
        self.limit = limit
        self.heartbeat = heartbeat
        self.open = 0

    def check_capacity(self) -> None:
        if self.open >= self.limit:
            raise CapacityError(
                f"{self.open} event streams are open, the most this service "
                f"allows (HPOSVC_MAX_STREAMS); retry later"
            )

    async def events(self, study_id: str, after: str) -> AsyncIterator[bytes]:
        """SSE frames of ``study_id`` after stream id ``after``."""
        self.open += 1
        connection: Any = aioredis.Redis.from_url(
            self.redis_url,
            decode_responses=True,
            client_name=STREAM_CLIENT_NAME,
            single_connection_client=True,
            # XREAD blocks for up to a heartbeat; redis-py's default read
            # timeout (5 s) would cut an idle stream short.
            socket_timeout=self.heartbeat + STREAM_READ_MARGIN_S,
        )
        key = self.keys.events(study_id)
        block_ms = max(1, int(self.heartbeat * 1000))
        try:
            yield b"retry: 1000\n\n"
            cursor = after
            while True:
                reply = await connection.xread({key: cursor}, count=500, block=block_ms)
                if not reply:
                    yield b": heartbeat\n\n"
                    continue
                for entry_id, fields in reply[0][1]:
                    cursor = entry_id
                    yield _frame(entry_id, fields["type"], fields["event"])
                    if fields[
                        "type"
                    ] in TERMINAL_EVENTS and not await connection.xrange(
                        key, min=f"({entry_id}", count=1
                    ):
                        return
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            logger.warning("event stream of %s: Redis: %s", study_id, error)
            yield _frame(None, "stream_error", json.dumps({"error": "Redis lost"}))
        finally:
            self.open -= 1
            # A disconnecting client cancels this generator; closing must still run.
            with anyio.CancelScope(shield=True):
                await connection.aclose()


def _frame(event_id: str | None, kind: str, data: str) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {data}\n\n".encode()

"""An idle event stream outlasts redis-py's default 5 s read timeout."""

from __future__ import annotations

import asyncio
import uuid

import redis

from api.streams import StreamRegistry

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_idle_stream_sends_heartbeats_past_default_read_timeout() -> None:
    prefix = f"hposvc-test-idle-{uuid.uuid4().hex[:8]}"
    registry = StreamRegistry(
        redis_url=REDIS_URL, prefix=prefix, limit=4, heartbeat=6.0
    )

    async def first_frames() -> list[bytes]:
        frames = []
        async for frame in registry.events("quiet", "0-0"):
            frames.append(frame)
            if len(frames) == 2:
                break
        return frames

    try:
        frames = asyncio.run(asyncio.wait_for(first_frames(), timeout=30))
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    # The retry hint, then a heartbeat after 6 s of silence: not "Redis lost".
    assert frames[0].startswith(b"retry:")
    assert frames[1] == b": heartbeat\n\n"

"""A small client of the hposvc service, used by the CLI's ``--api`` commands.

:meth:`ServiceClient.events` follows a study's server-sent events to its end,
reconnecting with ``Last-Event-ID`` when the connection drops, so the caller
sees every event exactly once. A resumed study's stream holds a terminal event
of each earlier run: the end is the terminal event after which the server
closes the stream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from hposvc.errors import (
    ConflictError,
    HposvcError,
    NotFoundError,
    SpecError,
    UnavailableError,
)

__all__ = ["ServiceClient", "parse_sse"]

logger = logging.getLogger(__name__)

TERMINAL_EVENTS = ("study_completed", "study_failed", "study_cancelled")

_ERROR_OF_STATUS: dict[int, type[HposvcError]] = {
    404: NotFoundError,
    409: ConflictError,
    422: SpecError,
    503: UnavailableError,
}


class ServiceClient:
    """Calls the API at ``base_url``, with ``token`` as bearer when given."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def submit(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self._json(self._call("POST", "/studies", json=dict(spec)))

    def study(self, study_id: str) -> dict[str, Any]:
        return self._json(self._call("GET", f"/studies/{study_id}"))

    def studies(
        self, *, status: str | None = None, offset: int = 0, limit: int = 50
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if status:
            params["status"] = status
        return self._json(self._call("GET", "/studies", params=params))

    def trials(self, study_id: str) -> list[dict[str, Any]]:
        body = self._json(self._call("GET", f"/studies/{study_id}/trials"))
        return list(body["trials"])

    def cancel(self, study_id: str) -> dict[str, Any]:
        return self._json(self._call("DELETE", f"/studies/{study_id}"))

    def resume(self, study_id: str) -> dict[str, Any]:
        return self._json(self._call("POST", f"/studies/{study_id}/resume"))

    def events(
        self, study_id: str, *, last_event_id: str | None = None, retries: int = 30
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(event id, event)`` of the study until its final terminal event."""
        failures = 0
        ended = False
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                with self.http.stream(
                    "GET",
                    f"/studies/{study_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(10, read=120),
                ) as response:
                    _raise_for(response)
                    for event_id, kind, data in parse_sse(response.iter_lines()):
                        failures = 0
                        if not event_id:
                            continue
                        last_event_id = event_id
                        ended = kind in TERMINAL_EVENTS
                        yield event_id, json.loads(data)
                # The server closes a stream only after the last terminal event.
                if ended:
                    return
            except (httpx.TransportError, UnavailableError) as error:
                if ended:
                    return
                failures += 1
                if failures > retries:
                    raise UnavailableError(f"event stream lost: {error}") from None
                logger.info("event stream dropped (%s); reconnecting", error)
                time.sleep(min(5.0, 0.5 * failures))

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise UnavailableError(f"{self.http.base_url}: {error}") from None
        _raise_for(response)
        return response

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        return dict(response.json())


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    response.read()
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    kind = _ERROR_OF_STATUS.get(response.status_code, HposvcError)
    raise kind(f"{response.status_code}: {detail}")


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str | None, str, str]]:
    """``(id, event, data)`` per server-sent event; comments are skipped."""
    event_id: str | None = None
    kind, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event_id, kind, "\n".join(data)
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)

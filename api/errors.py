"""The one mapping from hposvc's errors to HTTP status codes.

Every error body is ``{"detail": "<message>"}``; a 422 adds ``"problems"``,
one ``{"field", "value", "message"}`` per problem, at any nesting depth.
"""

from __future__ import annotations

import logging
import math
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from hposvc.errors import (
    CapacityError,
    ConflictError,
    DataError,
    HposvcError,
    NotFoundError,
    RequestTooLargeError,
    SpecError,
    UnavailableError,
    UnsupportedMediaTypeError,
)

__all__ = ["STATUS_OF_ERROR", "install_error_handlers", "status_of"]

logger = logging.getLogger(__name__)

#: Most specific first.
STATUS_OF_ERROR: tuple[tuple[type[HposvcError], int], ...] = (
    (SpecError, 422),
    (RequestTooLargeError, 413),
    (UnsupportedMediaTypeError, 415),
    (NotFoundError, 404),
    (ConflictError, 409),
    (CapacityError, 429),
    (UnavailableError, 503),
    (DataError, 500),
)


def status_of(error: HposvcError) -> int:
    for kind, status in STATUS_OF_ERROR:
        if isinstance(error, kind):
            return status
    return 400


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HposvcError, _hposvc_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)


async def _hposvc_error(request: Request, exc: Exception) -> JSONResponse:
    error = cast(HposvcError, exc)
    status = status_of(error)
    body: dict[str, Any] = {"detail": str(error)}
    if isinstance(error, SpecError):
        body["problems"] = error.problems or [
            {"field": None, "value": None, "message": line}
            for line in str(error).splitlines()
        ]
    if status >= 500:
        logger.warning("%s %s: %s", request.method, request.url.path, error)
    headers = {"Retry-After": "5"} if status in (429, 503) else None
    return JSONResponse(_finite(body), status_code=status, headers=headers)


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    error = cast(RequestValidationError, exc)
    problems = [
        {
            "field": ".".join(str(part) for part in item["loc"]),
            "value": item.get("input"),
            "message": item["msg"],
        }
        for item in error.errors()
    ]
    detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return JSONResponse(
        _finite({"detail": detail, "problems": problems}), status_code=422
    )


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value

"""The exceptions hposvc raises.

Every error derives from :class:`HposvcError`, so callers can catch hposvc's
failures in one clause, and also from the builtin that best describes it, so
code written against the builtins keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CapacityError",
    "ConflictError",
    "DataError",
    "HposvcError",
    "NotFoundError",
    "RequestTooLargeError",
    "SpecError",
    "StudyFailed",
    "StudyInterrupted",
    "UnavailableError",
    "UnsupportedMediaTypeError",
]


class HposvcError(Exception):
    """Root of hposvc's errors."""


class SpecError(HposvcError, ValueError):
    """A specification or argument has an invalid value.

    ``problems`` lists each problem as ``{"field", "value", "message"}`` when
    the error comes from validating a spec; the message holds the same, one
    line per problem.
    """

    def __init__(self, message: str, *, problems: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.problems = problems or []


class NotFoundError(HposvcError, KeyError):
    """A named thing (a data set, a study, a trial) does not exist."""

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of its argument, which would
        # wrap the message in quotes.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class DataError(HposvcError, RuntimeError):
    """Data are missing or corrupt, or could not be downloaded."""


class ConflictError(HposvcError, RuntimeError):
    """The request clashes with existing state (a study name already taken)."""


class UnavailableError(HposvcError, ConnectionError):
    """A backing service (Redis, Ray) cannot be reached right now."""


class CapacityError(HposvcError, RuntimeError):
    """A documented limit of the service is reached (open event streams)."""


class RequestTooLargeError(HposvcError, ValueError):
    """A request body is larger than the service accepts."""


class UnsupportedMediaTypeError(HposvcError, ValueError):
    """A request body is declared as something other than JSON."""


class StudyInterrupted(HposvcError, RuntimeError):
    """A study stopped before its trials ended (SIGINT); it can be resumed."""


class StudyFailed(HposvcError, RuntimeError):
    """Every trial of a study failed; the message carries the first error."""

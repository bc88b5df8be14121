"""The exceptions hposvc raises.

Every error derives from :class:`HposvcError`, so callers can catch hposvc's
failures in one clause, and also from the builtin that best describes it, so
code written against the builtins keeps working.
"""

from __future__ import annotations

__all__ = ["DataError", "HposvcError", "NotFoundError", "SpecError"]


class HposvcError(Exception):
    """Root of hposvc's errors."""


class SpecError(HposvcError, ValueError):
    """A specification or argument has an invalid value."""


class NotFoundError(HposvcError, KeyError):
    """A named thing (a data set, a study, a trial) does not exist."""

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of its argument, which would
        # wrap the message in quotes.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class DataError(HposvcError, RuntimeError):
    """Data are missing or corrupt, or could not be downloaded."""

"""Study events: what happens in a study, as JSON-safe dictionaries.

A :class:`StudyEventCallback` runs in the Tune driver and turns every trial
event into a plain dict handed to each *sink* (a callable): the CLI's live
display is one sink, the Redis stream writer of the service another. Events
carry ``type``, ``study_id``, a wall-clock ``time`` and, for trial events,
``trial_id`` and ``index``.

Event types: ``study_started``, ``trial_started``, ``trial_result`` (every
hyperparameter step), ``trial_completed``, ``trial_diverged``,
``trial_stopped`` (early-stopped by a scheduler), ``trial_failed``,
``study_completed`` and ``study_failed``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ray import tune

__all__ = [
    "EventSink",
    "StudyEventCallback",
    "json_safe",
    "last_line",
    "restore_sinks",
    "trial_event_type",
]

logger = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any]], None]

#: Sinks that a callback unpickled by ``Tuner.restore`` in this process takes
#: up, by study id (see :func:`restore_sinks`).
_RESTORE_SINKS: dict[str, list[EventSink]] = {}

#: Metrics copied from a Tune result into a ``trial_result`` event.
RESULT_KEYS = (
    "hyperparameter_step",
    "weight_steps",
    "training_loss",
    "validation_loss",
    "test_loss",
    "test_loss_original_units",
    "lr",
    "lr_min",
    "lr_max",
    "weight_decay",
    "momentum",
    "skipped_updates",
    "wall_seconds",
    "status",
    "reason",
)


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None``.

    A mapping that held such a number gains ``"non_finite": [keys]`` naming
    them, so a client can tell a missing value from a diverged one.
    """
    if isinstance(value, Mapping):
        cleaned: dict[str, Any] = {}
        non_finite = []
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                non_finite.append(str(key))
                cleaned[str(key)] = None
            else:
                cleaned[str(key)] = json_safe(item)
        if non_finite:
            cleaned["non_finite"] = sorted(
                set(non_finite) | set(cleaned.get("non_finite") or [])
            )
        return cleaned
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def trial_event_type(last_result: Mapping[str, Any] | None, budget: int) -> str:
    """How a trial that ended without an error ended."""
    result = last_result or {}
    if result.get("status") == "diverged":
        return "trial_diverged"
    if int(result.get("hyperparameter_step", 0)) >= budget:
        return "trial_completed"
    return "trial_stopped"


class StudyEventCallback(tune.Callback):
    """Forwards Tune's trial events of one study to event sinks.

    A sink that raises is logged and skipped: a broken display or store never
    stops a study.
    """

    def __init__(self, study_id: str, budget: int, sinks: Iterable[EventSink]):
        self.study_id = study_id
        self.budget = budget
        self.sinks = list(sinks)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment; sinks (live displays,
        # connections) belong to this process and are given again on restore.
        return self.__dict__ | {"sinks": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.sinks = list(_RESTORE_SINKS.get(self.study_id, ()))

    def emit(self, event_type: str, **fields: Any) -> None:
        event = json_safe(
            {"type": event_type, "study_id": self.study_id, "time": time.time()}
            | fields
        )
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:
                logger.exception("study %s: event sink %r failed", self.study_id, sink)

    def on_trial_start(
        self, iteration: int, trials: list, trial: Any, **info: Any
    ) -> None:
        self.emit("trial_started", **_identity(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        metrics = {key: result[key] for key in RESULT_KEYS if key in result}
        self.emit("trial_result", **_identity(trial), metrics=metrics)

    def on_trial_complete(
        self, iteration: int, trials: list, trial: Any, **info: Any
    ) -> None:
        result = trial.last_result or {}
        self.emit(
            trial_event_type(result, self.budget),
            **_identity(trial),
            reason=result.get("reason"),
        )

    def on_trial_error(
        self, iteration: int, trials: list, trial: Any, **info: Any
    ) -> None:
        error = _trial_error(trial)
        self.emit("trial_failed", **_identity(trial), error=last_line(str(error)))


@contextlib.contextmanager
def restore_sinks(study_id: str, sinks: Iterable[EventSink]) -> Iterator[None]:
    """Give ``sinks`` to the study's callback while ``Tuner.restore`` unpickles it."""
    _RESTORE_SINKS[study_id] = list(sinks)
    try:
        yield
    finally:
        del _RESTORE_SINKS[study_id]


def _trial_error(trial: Any) -> str:
    """The trial's error as Tune wrote it to the trial's local error file.

    ``Trial.get_error`` reads the copy in storage, which Tune syncs only later,
    so at ``on_trial_error`` time the local file is the one that exists.
    """
    try:
        path = trial.error_file
        if path:
            return Path(path).read_text()
        error = trial.get_error()
    except Exception:  # an unreadable error file must not break the event
        error = None
    return str(error) if error is not None else "trial raised an error"


def _identity(trial: Any) -> dict[str, Any]:
    return {"trial_id": trial.trial_id, "index": trial.config.get("trial_index")}


def last_line(text: str) -> str:
    """The last non-blank line of an error text (a traceback's message)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text

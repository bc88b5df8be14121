"""The Ray Job that runs one study of the service.

``python -m hposvc.job --study-id ID`` is the entrypoint the API submits (the
job's submission id is the study id); with ``--resume`` it continues the
study from its trials' checkpoints (``POST /studies/{id}/resume``). It reads
the study's spec from Redis (``REDIS_URL``, ``HPOSVC_KEY_PREFIX``), runs it on
the cluster the job belongs to, with a :class:`hposvc.store.RedisEventSink`
receiving every event, and records the outcome: the summary's trial records
and best trial, and a ``study_completed`` or ``study_failed`` event. A study
cancelled meanwhile stays cancelled: the store refuses events after a
terminal one (until the study is reopened by a resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hposvc.settings import ServiceSettings
from hposvc.spec import StudySpec
from hposvc.store import RedisEventSink, StudyStore, dumps

__all__ = ["main", "run_job"]

logger = logging.getLogger(__name__)


def run_job(study_id: str, settings: ServiceSettings, *, resume: bool = False) -> int:
    """Run the stored study ``study_id``; 0 when it completed, 1 otherwise.

    With ``resume``, continue it from the Tune experiment under the results
    directory (see :func:`hposvc.study.run_study`).
    """
    from hposvc.study import run_study

    if not settings.redis_url:
        logger.error("study %s: REDIS_URL is not set for the job", study_id)
        return 2
    store = StudyStore.from_url(
        settings.redis_url, settings.key_prefix, maxlen=settings.stream_maxlen
    )
    sink = RedisEventSink(store, study_id)
    spec = StudySpec.model_validate(store.spec(study_id))
    summary_first = _SummaryFirst(store, study_id, sink)
    try:
        run_study(
            spec,
            study_id=study_id,
            sinks=[summary_first],
            address="auto",
            results_dir=settings.results_dir,
            log_to_driver=False,
            resume=resume,
        )
    except Exception as error:
        logger.exception("study %s failed", study_id)
        if summary_first.final_event_sent:
            return 1
        # run_study reports the failures it sees; this covers the rest.
        failed = {"type": "study_failed", "study_id": study_id, "time": time.time()}
        sink(failed | {"error": f"{type(error).__name__}: {error}"})
        return 1
    return 0


class _SummaryFirst:
    """Stores the summary's trial records before the study's final event.

    A client that sees ``study_completed`` (or ``study_failed``) and then asks
    for the trials gets the summary's records, never a mix.
    """

    def __init__(self, store: StudyStore, study_id: str, sink: RedisEventSink):
        self.store, self.study_id, self.sink = store, study_id, sink
        self.final_event_sent = False

    def __call__(self, event: dict[str, Any]) -> None:
        final = event.get("type") in ("study_completed", "study_failed")
        if final and event.get("summary_path"):
            summary = json.loads(Path(event["summary_path"]).read_text())
            for record in summary["trials"]:
                self.store.put_trial(self.study_id, record)
            self.store.update(
                self.study_id,
                {
                    "best_trial": dumps(summary["best_trial"]),
                    "summary_path": str(event["summary_path"]),
                },
            )
        self.sink(event)
        self.final_event_sent = self.final_event_sent or final


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hposvc.job", description="Run one stored hposvc study."
    )
    parser.add_argument("--study-id", required=True)
    parser.add_argument(
        "--resume", action="store_true", help="continue from the trials' checkpoints"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run_job(args.study_id, ServiceSettings(), resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())

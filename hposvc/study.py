"""From a :class:`StudySpec` to a finished study: Tuner, run, summary.

:func:`run_study` starts (or attaches to) Ray, checks that the cluster can
hold one trial, builds a Ray Tune ``Tuner`` whose trials are
:class:`trainables.trainable.HyperparameterTrainable`, runs it, and writes
``summary.json`` into the study's directory under the results directory.
Trial ``k`` of the study gets ``trial_index = k``, from which its initial
hyperparameters and weights are derived (see :mod:`hposvc.seeding`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import ray
from ray import tune
from ray.tune.search import Searcher

from hposvc.data import load_dataset
from hposvc.errors import HposvcError, SpecError, StudyFailed, StudyInterrupted
from hposvc.events import EventSink, StudyEventCallback, restore_sinks
from hposvc.search import build_scheduler, build_searcher, searcher_stop_reason
from hposvc.spec import StudySpec
from hposvc.summary import summarise, write_json_atomically

__all__ = [
    "StudyResult",
    "check_resources",
    "default_results_dir",
    "local_ray",
    "new_study_id",
    "run_study",
]

logger = logging.getLogger(__name__)


class _WithoutMissingResultFiles(logging.Filter):
    """Drops Tune's warning that a restored trial has no remote result file.

    With local storage there is no remote copy to fetch: every PBT exploit of a
    trial that has not yet written its ``result.json`` there logs one such
    warning, hundreds in a study, and nothing is wrong.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Remote file not found:")


_MISSING_RESULT_FILES = _WithoutMissingResultFiles()

SUMMARY_FILE = "summary.json"
#: Environment variables holding paths that trial processes read.
PATH_VARIABLES = ("HPOSVC_DATA_DIR", "HPOSVC_RESULTS_DIR", "HPOSVC_CONFIG_DIR")
#: The spec, written when a study starts, so it can be resumed by id alone.
SPEC_FILE = "spec.json"
CHECKPOINT_EVERY = 25


@dataclass(frozen=True)
class StudyResult:
    """A finished study: its summary and where it was written."""

    study_id: str
    directory: Path
    summary: dict[str, Any]

    @property
    def summary_path(self) -> Path:
        return self.directory / SUMMARY_FILE


def default_results_dir() -> Path:
    """``$HPOSVC_RESULTS_DIR``, else ``./results``."""
    return Path(os.environ.get("HPOSVC_RESULTS_DIR", "results")).resolve()


def new_study_id(spec: StudySpec) -> str:
    """The spec's name, else ``<dataset>-<algorithm>-<UTC time>-<random hex>``."""
    if spec.name:
        return spec.name
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{spec.dataset}-{spec.algorithm}-{stamp}-{secrets.token_hex(2)}"


@contextlib.contextmanager
def local_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    log_to_driver: bool = True,
) -> Iterator[None]:
    """Ray for the length of a study: attached to ``address``, else local.

    A local Ray gets an explicit CPU count and no dashboard, and is shut down
    on exit. If Ray is already initialised in this process it is used as is.
    """
    if ray.is_initialized():
        yield
        return
    # ray.init replaces SIGTERM's handler; a host process keeps its own.
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    if address:
        logger.info("attaching to Ray at %s", address)
        ray.init(
            address=address,
            logging_level=logging.WARNING,
            log_to_driver=log_to_driver,
        )
    else:
        cpus = num_cpus or os.cpu_count() or 1
        logger.info("starting a local Ray with %d CPUs", cpus)
        # Trial processes inherit this environment but not this working
        # directory: a relative data directory must be made absolute first.
        for variable in PATH_VARIABLES:
            if os.environ.get(variable):
                os.environ[variable] = str(Path(os.environ[variable]).resolve())
        ray.init(
            # "local" starts a new Ray even when a `ray start` cluster runs here.
            address="local",
            num_cpus=cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=log_to_driver,
        )
    signal.signal(signal.SIGTERM, previous_sigterm)
    try:
        yield
    finally:
        ray.shutdown()


def check_resources(spec: StudySpec, available: dict[str, float]) -> None:
    """Refuse a study whose trials could never be placed on this cluster.

    Ray would leave such trials pending for ever without an error.
    """
    for name, asked in (("cpu", spec.resources.cpu), ("gpu", spec.resources.gpu)):
        have = float(available.get(name.upper(), 0.0))
        if asked > have:
            allowed = f"at most {have:g}: the Ray cluster's {name.upper()}s in all"
            raise SpecError(
                f"resources.{name} = {asked}: each trial asks for {asked} "
                f"{name.upper()} but the Ray cluster has {have:g} in all",
                problems=[
                    {"field": f"resources.{name}", "value": asked, "message": allowed}
                ],
            )


def run_study(
    spec: StudySpec,
    *,
    results_dir: Path | None = None,
    study_id: str | None = None,
    sinks: Sequence[EventSink] = (),
    address: str | None = None,
    num_cpus: int | None = None,
    log_to_driver: bool = True,
    resume: bool = False,
) -> StudyResult:
    """Run a whole study and write its ``summary.json``.

    Args:
        spec: The validated study.
        results_dir: Parent of the study's directory (default
            :func:`default_results_dir`); never ``~/ray_results``.
        study_id: Defaults to :func:`new_study_id`.
        sinks: Receive every study and trial event (see :mod:`hposvc.events`).
        address: A running Ray cluster to attach to; default a local Ray.
        num_cpus: CPUs of a local Ray (default: all of this machine's).
        log_to_driver: Whether trial processes' logs reach this process.
        resume: Continue the study in ``results_dir / study_id`` from its
            trials' last checkpoints (Tune's restore): finished trials are
            kept, unfinished and errored ones resume. Starts afresh, with a
            warning, when there is nothing to restore.
    """
    study_id = study_id or new_study_id(spec)
    logging.getLogger("ray.tune.logger.logger").addFilter(_MISSING_RESULT_FILES)
    results_dir = (results_dir or default_results_dir()).resolve()
    directory = results_dir / study_id
    callback = StudyEventCallback(study_id, spec.budget.hyperparameter_steps, sinks)
    started = time.time()
    with local_ray(address, num_cpus=num_cpus, log_to_driver=log_to_driver):
        check_resources(spec, ray.cluster_resources())
        _check_data(spec, callback)
        searcher = None
        if resume and tune.Tuner.can_restore(str(directory)):
            callback.emit("study_resumed", spec=spec.model_dump(mode="json"))
            logger.info("study %s: resuming from %s", study_id, directory)
            with restore_sinks(study_id, sinks):
                tuner = restore_tuner(spec, directory)
        else:
            if resume:
                logger.warning(
                    "study %s: nothing to resume in %s; starting afresh",
                    study_id,
                    directory,
                )
            searcher = build_searcher(spec)
            directory.mkdir(parents=True, exist_ok=True)
            write_json_atomically(directory / SPEC_FILE, spec.model_dump(mode="json"))
            callback.emit("study_started", spec=spec.model_dump(mode="json"))
            logger.info(
                "study %s: %d trials of %s on %s",
                study_id,
                spec.samples,
                spec.algorithm,
                spec.dataset,
            )
            tuner = build_tuner(
                spec, study_id, results_dir, callback, searcher=searcher
            )
        try:
            grid = tuner.fit()
        except Exception as error:
            callback.emit("study_failed", error=str(error))
            raise
    stop_reason = searcher_stop_reason(searcher)
    summary = summarise(
        spec,
        study_id,
        grid,
        started=started,
        finished=time.time(),
        stop_reason=stop_reason,
    )
    directory.mkdir(parents=True, exist_ok=True)
    unfinished = _unfinished_trials(spec, grid, stop_reason)
    if unfinished:
        # Tune returns normally from fit() after SIGINT, with its state saved.
        message = (
            f"study {study_id} interrupted with {unfinished} of {spec.samples} "
            f"trials unfinished; continue it with `hposvc resume {study_id}`"
        )
        _end_unfinished(
            summary, directory, callback, StudyInterrupted(message), interrupted=True
        )
    if len(grid) and grid.num_errors == len(grid):
        first = next(t for t in summary["trials"] if t.get("error"))
        message = (
            f"study {study_id} failed: all {len(grid)} trials failed; trial "
            f"{first['index']}: {first['error']}"
        )
        _end_unfinished(summary, directory, callback, StudyFailed(message))
    write_json_atomically(directory / SUMMARY_FILE, summary)
    callback.emit(
        "study_completed",
        summary_path=str(directory / SUMMARY_FILE),
        best_trial=summary["best_trial"],
    )
    return StudyResult(study_id=study_id, directory=directory, summary=summary)


def _end_unfinished(
    summary: dict[str, Any],
    directory: Path,
    callback: StudyEventCallback,
    error: StudyInterrupted | StudyFailed,
    **fields: Any,
) -> NoReturn:
    """Write the summary as interrupted or failed, say so in one event, raise."""
    summary["status"] = (
        "interrupted" if isinstance(error, StudyInterrupted) else "failed"
    )
    write_json_atomically(directory / SUMMARY_FILE, summary)
    callback.emit(
        "study_failed",
        error=str(error),
        summary_path=str(directory / SUMMARY_FILE),
        **fields,
    )
    raise error


def _check_data(spec: StudySpec, callback: StudyEventCallback) -> None:
    """Load (or download) the data set here, once, before any trial starts.

    A missing data set then ends the study with one clear error instead of
    every trial failing with a traceback of its own.
    """
    try:
        load_dataset(spec.dataset, seed=spec.seed)
    except HposvcError as error:
        callback.emit("study_failed", error=f"{type(error).__name__}: {error}")
        raise


def _unfinished_trials(
    spec: StudySpec, grid: tune.ResultGrid, stop_reason: str | None
) -> int:
    """Trials that neither ended nor errored, plus those never started.

    A searcher that stopped early (``stop_reason``) leaves no trial owed.
    """
    ended = grid.num_terminated + grid.num_errors
    owed = len(grid) if stop_reason else max(len(grid), spec.samples)
    return owed - ended


def _trainable(spec: StudySpec) -> Any:
    from trainables.trainable import HyperparameterTrainable

    return tune.with_resources(
        HyperparameterTrainable,
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )


def restore_tuner(spec: StudySpec, directory: Path) -> tune.Tuner:
    """The study's Tuner as it was saved, its trials resuming from checkpoints.

    The searcher's state (bayesopt's observations, TPE's history) and the
    scheduler's come back with it.
    """
    return tune.Tuner.restore(
        str(directory),
        trainable=_trainable(spec),
        resume_unfinished=True,
        resume_errored=True,
    )


def build_tuner(
    spec: StudySpec,
    study_id: str,
    results_dir: Path,
    callback: tune.Callback,
    *,
    searcher: Searcher | None = None,
) -> tune.Tuner:
    """The Tuner of a study: ``samples`` trials, indexed 0..samples-1.

    Without a searcher, trial ``k`` is a grid point with ``trial_index = k``
    and starts from its seeded sample; under PBT that sample is written into
    the config (``lr``, ``weight_decay``, ``momentum``), which PBT perturbs.
    With a searcher (see :func:`hposvc.search.build_searcher`), the searcher
    numbers the trials and chooses their initial hyperparameters.
    """
    trainable = _trainable(spec)
    param_space: dict[str, Any] = {"spec": spec.model_dump(mode="json")}
    if searcher is None:
        param_space["trial_index"] = tune.grid_search(list(range(spec.samples)))
        if spec.scheduler == "pbt":
            param_space |= {
                key: tune.sample_from(functools.partial(_seeded_value, spec, key))
                for key in ("lr", "weight_decay", "momentum")
            }
    pbt = spec.scheduler == "pbt"
    checkpoint_every = (
        min(CHECKPOINT_EVERY, spec.search.pbt.perturbation_interval)
        if pbt
        else CHECKPOINT_EVERY
    )
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            num_samples=1 if searcher is None else spec.samples,
            # A searcher carries its own ConcurrencyLimiter.
            max_concurrent_trials=spec.max_concurrent_trials
            if searcher is None
            else None,
            search_alg=searcher,
            scheduler=build_scheduler(spec),
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=study_id,
            storage_path=str(results_dir),
            stop={"hyperparameter_step": spec.budget.hyperparameter_steps},
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=checkpoint_every,
                checkpoint_at_end=True,
                # PBT may exploit any recent checkpoint of a donor: keep them.
                num_to_keep=None if pbt else 2,
            ),
            failure_config=tune.FailureConfig(max_failures=1),
            callbacks=[callback],
            verbose=0,
        ),
    )


def _trial_name(trial: Any) -> str:
    return f"trial_{int(trial.config['trial_index']):04d}"


def _seeded_value(spec: StudySpec, key: str, config: dict[str, Any]) -> float:
    """Trial ``trial_index``'s seeded initial value of ``key`` (for PBT configs)."""
    from trainables.trial import initial_hyperparameters

    index = int(config["trial_index"])
    return float(initial_hyperparameters(spec, index).as_dict()[key])

"""The ``hposvc`` command.

``hposvc submit DATASET ALGORITHM`` runs a study on a local Ray (or attaches
to one with ``--address``), shows each trial live, prints the final table and
the path of ``summary.json``. ``hposvc resume ID`` continues a failed or
interrupted study from its trials' checkpoints (with ``--api``, on the
service). ``hposvc algorithms`` and ``hposvc datasets`` list what can be
submitted. Bad input ends the command with one line on
standard error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from hposvc.catalog import ALGORITHMS
from hposvc.errors import HposvcError, NotFoundError, StudyFailed, StudyInterrupted
from hposvc.service_cli import (
    SERVICE_COMMANDS,
    add_api_argument,
    add_service_commands,
    resume_remote,
    run_service_command,
    submit_remote,
)

if TYPE_CHECKING:
    from hposvc.spec import StudySpec

__all__ = ["main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hposvc", description="Ray-native hyperparameter optimisation."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("submit", help="run a study")
    submit.add_argument("dataset", help="data set id (see `hposvc datasets`)")
    submit.add_argument("algorithm", help="algorithm id (see `hposvc algorithms`)")
    submit.add_argument("--samples", type=int, help="number of trials")
    submit.add_argument("--seed", type=int, help="seed of initialisations (default 0)")
    submit.add_argument("--name", help="study name, unique; default generated")
    submit.add_argument(
        "--hyperparameter-steps", type=int, help="hyperparameter steps per trial"
    )
    submit.add_argument(
        "--weight-steps", type=int, help="weight steps per hyperparameter step (T)"
    )
    submit.add_argument("--batch-size", type=int, help="rows per weight step")
    submit.add_argument("--cpus-per-trial", type=float, help="CPUs of each trial")
    submit.add_argument("--gpus-per-trial", type=float, help="GPUs of each trial")
    submit.add_argument("--max-concurrent-trials", type=int)
    submit.add_argument(
        "--searcher",
        choices=("grid_seeded", "bayesopt", "tpe"),
        help="how trials get initial hyperparameters (default: the algorithm's)",
    )
    submit.add_argument(
        "--scheduler",
        choices=("fifo", "asha", "pbt"),
        help="early stopping / population-based training (default: the algorithm's)",
    )
    resume = commands.add_parser(
        "resume", help="continue a failed or interrupted study from its checkpoints"
    )
    resume.add_argument("study_id", help="the study's id (its folder's name)")
    for command in (submit, resume):
        _add_run_arguments(command)

    commands.add_parser("algorithms", help="list algorithm ids and their defaults")
    commands.add_parser("datasets", help="list data set ids and their defaults")
    add_service_commands(commands)
    return parser


def _add_run_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--results-dir", type=Path, help="where studies are written (./results)"
    )
    command.add_argument("--address", help="Ray cluster to attach to (default: local)")
    command.add_argument("--num-cpus", type=int, help="CPUs of a local Ray")
    command.add_argument(
        "--no-progress", action="store_true", help="no live table, final table only"
    )
    add_api_argument(command)


def spec_request(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields that flags set; the rest come from configs/."""
    request: dict[str, Any] = {"dataset": args.dataset, "algorithm": args.algorithm}
    flat = {
        "samples": args.samples,
        "seed": args.seed,
        "name": args.name,
        "max_concurrent_trials": args.max_concurrent_trials,
    }
    nested = {
        ("budget", "hyperparameter_steps"): args.hyperparameter_steps,
        ("budget", "weight_steps"): args.weight_steps,
        ("budget", "batch_size"): args.batch_size,
        ("resources", "cpu"): args.cpus_per_trial,
        ("resources", "gpu"): args.gpus_per_trial,
        ("search", "searcher"): args.searcher,
        ("search", "scheduler"): args.scheduler,
    }
    request |= {key: value for key, value in flat.items() if value is not None}
    for (section, key), value in nested.items():
        if value is not None:
            request.setdefault(section, {})[key] = value
    return request


def submit(args: argparse.Namespace, console: Console) -> int:
    from hposvc.spec import resolve_spec
    from hposvc.study import new_study_id

    if args.api:
        return submit_remote(
            spec_request(args), args.api, console, live=not args.no_progress
        )
    spec = resolve_spec(spec_request(args))
    study_id = new_study_id(spec)
    console.print(
        f"study [bold]{study_id}[/]: {spec.samples} trials of {spec.algorithm} on "
        f"{spec.dataset}, {spec.budget.hyperparameter_steps} × "
        f"{spec.budget.weight_steps} steps"
    )
    return run_locally(args, console, spec, study_id)


def resume(args: argparse.Namespace, console: Console) -> int:
    from hposvc.spec import StudySpec
    from hposvc.study import SPEC_FILE, default_results_dir

    if args.api:
        return resume_remote(
            args.study_id, args.api, console, live=not args.no_progress
        )
    results_dir = (args.results_dir or default_results_dir()).resolve()
    spec_path = results_dir / args.study_id / SPEC_FILE
    if not spec_path.is_file():
        raise NotFoundError(
            f"no study {args.study_id!r} in {results_dir} (no {SPEC_FILE} there)"
        )
    spec = StudySpec.model_validate(json.loads(spec_path.read_text()))
    console.print(
        f"study [bold]{args.study_id}[/]: resuming {spec.samples} trials of "
        f"{spec.algorithm} on {spec.dataset} from {results_dir / args.study_id}"
    )
    return run_locally(args, console, spec, args.study_id, resume=True)


def run_locally(
    args: argparse.Namespace,
    console: Console,
    spec: StudySpec,
    study_id: str,
    *,
    resume: bool = False,
) -> int:
    """Run (or resume) the study here with the live table; print how it ended."""
    from hposvc.progress import LiveProgress, final_table
    from hposvc.study import local_ray, run_study

    progress = LiveProgress(
        console,
        study_id=study_id,
        samples=spec.samples,
        budget=spec.budget.hyperparameter_steps,
    )
    options: dict[str, Any] = {
        "results_dir": args.results_dir,
        "study_id": study_id,
        "resume": resume,
    }
    # Ray starts before the live table, so its start-up lines do not tear it.
    with local_ray(args.address, num_cpus=args.num_cpus, log_to_driver=args.verbose):
        if args.no_progress:
            result = run_study(spec, **options)
        else:
            with progress:
                result = run_study(spec, sinks=[progress], **options)
            console.print()
    console.print(final_table(result.summary))
    print_outcome(console, result.summary)
    console.print(f"summary: {result.summary_path}")
    return 0


def print_outcome(console: Console, summary: dict[str, Any]) -> None:
    from hposvc.progress import print_best_trial

    aggregate = summary["aggregate"]
    stopped_early = (summary.get("search") or {}).get("stopped_early")
    if stopped_early:
        console.print(
            f"search stopped after {aggregate['trials']} of "
            f"{summary['spec']['samples']} trials: {stopped_early}"
        )
    for trial in summary["trials"]:
        if trial["status"] in ("failed", "diverged"):
            why = trial.get("error") or trial.get("reason") or "no reason recorded"
            console.print(f"trial {trial['index']} {trial['status']}: {why}")
    print_best_trial(console, summary["best_trial"])
    mean = aggregate["mean_final_test_loss"]
    statuses = ", ".join(
        f"{n} {status}" for status, n in aggregate["by_status"].items()
    )
    console.print(
        f"trials: {statuses}; mean final test loss "
        f"{'—' if mean is None else f'{mean:.4g}'} over "
        f"{aggregate['finite_test_losses']} finite"
    )


def list_algorithms() -> int:
    from hposvc.spec import config_dir

    for info in ALGORITHMS.values():
        tuned = ", ".join(info.tuned) or "nothing"
        defaults = _config_text(config_dir() / f"{info.id}.yaml")
        if info.trainable:
            chosen = [f"{info.trainable} trials"] + [
                f"{role} {name}"
                for role, name in (
                    ("searcher", info.searcher),
                    ("scheduler", info.scheduler),
                )
                if name
            ]
            tuned = f"{tuned} ({', '.join(chosen)})"
        print(f"{info.id:<22} tunes {tuned}; {info.summary}{defaults}")
    return 0


def list_datasets() -> int:
    from hposvc.data import dataset_names
    from hposvc.spec import config_dir

    for name in dataset_names():
        print(f"{name:<14}{_config_text(config_dir() / f'{name}.yaml')}")
    return 0


def _config_text(path: Path) -> str:
    import yaml

    if not path.is_file():
        return ""
    layer = yaml.safe_load(path.read_text()) or {}
    parts = [
        f"{section}.{key}={value}"
        for section, values in layer.items()
        for key, value in (values.items() if isinstance(values, dict) else [])
    ] + [
        f"{key}={value}" for key, value in layer.items() if not isinstance(value, dict)
    ]
    return f"  [{' '.join(parts)}]" if parts else ""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from hposvc.settings import QUIET_RAY

    for key, value in QUIET_RAY.items():
        os.environ.setdefault(key, value)
    # Piped output gets room for the final table instead of rich's 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 132)
    try:
        if args.command == "submit":
            return submit(args, console)
        if args.command == "resume":
            return resume(args, console)
        if args.command == "algorithms":
            return list_algorithms()
        if args.command in SERVICE_COMMANDS:
            return run_service_command(args, console)
        return list_datasets()
    except StudyInterrupted as error:
        print(f"hposvc: {error}", file=sys.stderr)
        return 130
    except StudyFailed as error:
        print(f"hposvc: {error}", file=sys.stderr)
        return 1
    except HposvcError as error:
        message = "; ".join(str(error).splitlines())
        print(f"hposvc: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hposvc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

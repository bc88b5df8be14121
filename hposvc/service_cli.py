"""The CLI's service commands: ``serve``, and the client side of ``--api``.

``hposvc serve`` runs the API (starting a local Redis and Ray head when none
is given). ``hposvc submit ... --api URL`` posts the study and follows its
event stream with the same live table and final table as a local run;
``list``, ``status`` and ``cancel`` talk to the same service, and
``resume ID --api URL`` resumes a failed or cancelled study there and follows
it like ``submit``. The URL defaults to ``$HPOSVC_API_URL`` and the bearer token to
``$HPOSVC_API_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rich.console import Console
from rich.table import Table

from hposvc.errors import SpecError

__all__ = [
    "SERVICE_COMMANDS",
    "add_service_commands",
    "resume_remote",
    "run_service_command",
    "submit_remote",
]

SERVICE_COMMANDS = ("serve", "list", "status", "cancel")


def add_api_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api",
        default=os.environ.get("HPOSVC_API_URL"),
        help="hposvc service URL (default $HPOSVC_API_URL); token: $HPOSVC_API_TOKEN",
    )


def add_service_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the hposvc service (REST + events)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8000)")
    serve.add_argument(
        "--ray-address", help="Ray GCS host:port (default: start a local Ray head)"
    )
    serve.add_argument("--ray-jobs-url", help="Ray Jobs API URL of that cluster")
    serve.add_argument(
        "--redis-url", help="Redis URL (default $REDIS_URL, else a local Redis)"
    )
    serve.add_argument("--num-cpus", type=int, help="CPUs of a local Ray head")

    listing = commands.add_parser("list", help="list the service's studies")
    listing.add_argument("--status", help="only studies of this status")
    listing.add_argument("--limit", type=int, default=50)
    add_api_argument(listing)
    for name, text in (
        ("status", "show a study of the service"),
        ("cancel", "cancel a running study"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("study_id")
        add_api_argument(command)
        if name == "status":
            command.add_argument(
                "--json", action="store_true", help="the whole record, as JSON"
            )


def run_service_command(args: argparse.Namespace, console: Console) -> int:
    if args.command == "serve":
        return _serve(args)
    client = _client(args.api)
    with client:
        if args.command == "list":
            page = client.studies(status=args.status, limit=args.limit)
            console.print(_studies_table(page["studies"]))
            console.print(f"{len(page['studies'])} of {page['total']} studies")
        elif args.command == "status":
            study = client.study(args.study_id)
            if args.json:
                console.print_json(json.dumps(study))
            else:
                _print_study(console, study)
        else:
            study = client.cancel(args.study_id)
            note = "" if study["status"] == "cancelled" else " (it had ended already)"
            console.print(f"study {study['study_id']}: {study['status']}{note}")
    return 0


def _print_study(console: Console, study: dict[str, Any]) -> None:
    """A study in a few lines: status, progress, what it runs, best trial, times."""
    spec, progress = study["spec"], study["progress"]
    budget = spec.get("budget") or {}
    console.print(
        f"study {study['study_id']}: {study['status']} "
        f"({progress['trials_done']}/{progress['trials_total']} trials done)"
    )
    console.print(
        f"{spec.get('algorithm')} on {spec.get('dataset')}, seed {spec.get('seed')}, "
        f"{budget.get('hyperparameter_steps')} × {budget.get('weight_steps')} steps"
    )
    times = [
        f"{label} {study[key]}"
        for label, key in (
            ("created", "created_at"),
            ("started", "started_at"),
            ("finished", "finished_at"),
        )
        if study.get(key)
    ]
    if times:
        console.print(", ".join(times))
    if study.get("error"):
        console.print(f"error: {study['error']}")
    _print_result(console, study)


def _print_result(console: Console, study: dict[str, Any]) -> None:
    """The study's best trial so far and, once written, its summary's path."""
    from hposvc.progress import print_best_trial

    print_best_trial(console, study.get("best_trial"))
    if study.get("summary_path"):
        console.print(f"summary: {study['summary_path']} (on the cluster)")


def submit_remote(
    request: dict[str, Any], api: str, console: Console, *, live: bool
) -> int:
    """Post a study to the service and follow its events to the end."""
    with _client(api) as client:
        study_id = client.submit(request)["study_id"]
        spec = client.study(study_id)["spec"]
        console.print(
            f"study [bold]{study_id}[/] submitted to {api}: {spec['samples']} trials "
            f"of {spec['algorithm']} on {spec['dataset']}"
        )
        return _follow(client, study_id, spec, console, live=live)


def resume_remote(study_id: str, api: str, console: Console, *, live: bool) -> int:
    """Resume a failed or cancelled study on the service and follow it to the end."""
    with _client(api) as client:
        study = client.resume(study_id)
        console.print(
            f"study [bold]{study_id}[/] resumed on {api} (resume {study['resumes']}, "
            f"Ray job {study['job_id']}): "
            f"{study['progress']['trials_done']}/{study['progress']['trials_total']}"
            " trials already finished"
        )
        return _follow(
            client,
            study_id,
            study["spec"],
            console,
            live=live,
            after=study["resumed_after_event"],
        )


def _follow(
    client: Any,
    study_id: str,
    spec: dict[str, Any],
    console: Console,
    *,
    live: bool,
    after: str | None = None,
) -> int:
    """Follow the study's events (after event id ``after``); print how it ended."""
    from hposvc.progress import LiveProgress, final_table

    progress = LiveProgress(
        console,
        study_id=study_id,
        samples=spec["samples"],
        budget=spec["budget"]["hyperparameter_steps"],
    )
    last: dict[str, Any] = {}
    if live:
        with progress:
            # Trials finished in earlier runs count towards the live total.
            for trial in client.trials(study_id) if after else []:
                if trial.get("status") in ("completed", "diverged", "stopped"):
                    progress({**trial, "type": f"trial_{trial['status']}"})
            for _, event in client.events(study_id, last_event_id=after):
                progress(event)
                last = event
        console.print()
    else:
        for _, event in client.events(study_id, last_event_id=after):
            last = event
    study = client.study(study_id)
    trials = client.trials(study_id)
    summary = {
        "study_id": study_id,
        "trials": trials,
        "best_trial": study["best_trial"],
    }
    if trials and all("initial" in t for t in trials):
        console.print(final_table(summary))
    _print_result(console, study)
    console.print(f"study {study_id}: {study['status']}")
    if study["status"] != "completed":
        detail = last.get("error") or study.get("error")
        console.print(f"[red]{last.get('type')}[/]{': ' + detail if detail else ''}")
        return 1
    return 0


def _client(api: str | None) -> Any:
    from hposvc.client import ServiceClient

    if not api:
        raise SpecError("no service URL: pass --api URL or set HPOSVC_API_URL")
    return ServiceClient(api, token=os.environ.get("HPOSVC_API_TOKEN") or None)


def _serve(args: argparse.Namespace) -> int:
    from hposvc.service import serve
    from hposvc.settings import ServiceSettings

    overrides = {
        "host": args.host,
        "port": args.port,
        "ray_address": args.ray_address,
        "ray_jobs_url": args.ray_jobs_url,
        "redis_url": args.redis_url,
    }
    settings = ServiceSettings()
    settings = settings.model_copy(
        update={key: value for key, value in overrides.items() if value is not None}
    )
    serve(settings, num_cpus=args.num_cpus)
    return 0


def _studies_table(studies: list[dict[str, Any]]) -> Table:
    table = Table(box=None)
    for column in ("study", "status", "trials", "best valid loss", "created"):
        table.add_column(column)
    for study in studies:
        best = study.get("best_trial") or {}
        loss = best.get("final_validation_loss")
        progress = study["progress"]
        table.add_row(
            study["study_id"],
            study["status"],
            f"{progress['trials_done']}/{progress['trials_total']}",
            "—" if loss is None else f"{loss:.4g}",
            study.get("created_at") or "",
        )
    return table

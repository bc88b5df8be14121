"""What the CLI shows: a live table of trials while a study runs, and the final table.

:class:`LiveProgress` is an event sink (see :mod:`hposvc.events`), so it draws
a study run in this process and a study followed over the service's event
stream alike.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["LiveProgress", "final_table", "print_best_trial"]

#: Rows drawn live; with more trials, the ones updated most recently.
LIVE_ROWS = 24


class LiveProgress:
    """A live table with one row per trial: step, losses, lr, weight decay, momentum."""

    def __init__(self, console: Console, *, study_id: str, samples: int, budget: int):
        self.console = console
        self.study_id = study_id
        self.samples = samples
        self.budget = budget
        self._rows: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self._lock = threading.Lock()
        self._live = Live(
            self._render(), console=console, refresh_per_second=4, transient=False
        )

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._live.update(self._render())
        self._live.__exit__(*exc_info)
        if not self.console.is_terminal:
            # Off a terminal rich leaves the last line of the table open.
            self.console.line()

    def __call__(self, event: Mapping[str, Any]) -> None:
        trial_id = event.get("trial_id")
        if not trial_id:
            return
        with self._lock:
            row = self._rows.setdefault(trial_id, {"index": event.get("index")})
            if trial_id in self._order:
                self._order.remove(trial_id)
            self._order.append(trial_id)
            kind = event["type"]
            if kind == "trial_result":
                row.update(event.get("metrics", {}))
                row["state"] = "running"
            elif kind != "trial_started":
                row["state"] = kind.removeprefix("trial_")
            else:
                row["state"] = "started"
        self._live.update(self._render())

    def _render(self) -> Group:
        with self._lock:
            rows = [self._rows[t] for t in self._order[-LIVE_ROWS:]]
            states = [row.get("state") for row in self._rows.values()]
        done = sum(state not in (None, "started", "running") for state in states)
        header = Text(
            f"study {self.study_id}: {done}/{self.samples} trials finished",
            style="bold",
        )
        table = Table(box=None, pad_edge=False)
        for column in (
            "trial",
            "state",
            "step",
            "train",
            "valid",
            "test (orig.)",
            "lr",
            "wd",
            "mom",
        ):
            table.add_column(column, justify="right")
        for row in sorted(rows, key=lambda r: r.get("index") or 0):
            table.add_row(
                str(row.get("index")),
                str(row.get("state", "")),
                f"{row.get('hyperparameter_step', 0)}/{self.budget}",
                _number(row.get("training_loss")),
                _number(row.get("validation_loss")),
                _number(row.get("test_loss_original_units")),
                _number(row.get("lr")),
                _number(row.get("weight_decay")),
                _number(row.get("momentum")),
            )
        return Group(header, table)


def final_table(summary: Mapping[str, Any]) -> Table:
    """Every trial: initial → final hyperparameters, final validation and test loss.

    Training and validation losses are on the normalised targets; the test loss
    is in the target's original units, as the paper reports it.
    """
    table = Table(
        title=f"study {summary['study_id']} (initial → final hyperparameters)",
        box=box.SIMPLE_HEAD,
    )
    for column in (
        "trial",
        "status",
        "lr",
        "weight decay",
        "momentum",
        "valid loss",
        "test loss (original units)",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    best = (summary.get("best_trial") or {}).get("index")
    for trial in summary["trials"]:
        initial, final = trial["initial"] or {}, trial["final"]
        table.add_row(
            f"{trial['index']}{' *' if trial['index'] == best else ''}",
            trial["status"],
            *(
                f"{_number(initial.get(key), 3)} → {_number(final.get(key), 3)}"
                for key in ("lr", "weight_decay", "momentum")
            ),
            _number(trial["final_validation_loss"]),
            _number(trial["final_test_loss"]),
        )
    return table


def print_best_trial(console: Console, best: dict[str, Any] | None) -> None:
    """The line naming the trial with the lowest final validation loss."""
    if best is None:
        return
    console.print(
        f"best trial: {best['index']} ({best['trial_id']}), validation loss "
        f"{_number(best.get('final_validation_loss'))}, "
        f"test loss {_number(best.get('final_test_loss'))}"
    )


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    text = f"{value:.{digits}g}"
    # A momentum of 0.999999 must not read as 1, a value it never takes.
    while text == "1" and value < 1 and digits < 12:
        digits += 1
        text = f"{value:.{digits}g}"
    return text

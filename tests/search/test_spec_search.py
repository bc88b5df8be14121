"""Search and scheduler settings: defaults per algorithm, and refusals before a run."""

from __future__ import annotations

from typing import Any

import pytest

from hposvc.cli import build_parser, spec_request
from hposvc.errors import SpecError
from hposvc.spec import resolve_spec


def _spec(algorithm: str = "asha", **fields: Any) -> Any:
    return resolve_spec(
        {
            "dataset": "uci_energy",
            "algorithm": algorithm,
            "budget": {"hyperparameter_steps": 20},
        }
        | fields
    )


@pytest.mark.parametrize(
    ("algorithm", "searcher", "scheduler", "trainable"),
    [
        ("random", "grid_seeded", "fifo", "random"),
        ("bayesopt", "bayesopt", "fifo", "random"),
        ("tpe", "tpe", "fifo", "random"),
        ("asha", "grid_seeded", "asha", "random"),
        ("pbt", "grid_seeded", "pbt", "random"),
        ("ours_lr_momentum", "grid_seeded", "fifo", "ours_lr_momentum"),
    ],
)
def test_spec_method_defaults_follow_algorithm(
    algorithm: str, searcher: str, scheduler: str, trainable: str
) -> None:
    spec = _spec(algorithm)
    assert (spec.searcher, spec.scheduler, spec.trainable_algorithm) == (
        searcher,
        scheduler,
        trainable,
    )


def test_spec_bayesopt_has_paper_budget() -> None:
    spec = resolve_spec({"dataset": "uci_energy", "algorithm": "bayesopt"})
    assert spec.samples == 30
    assert spec.search.random_points == 5


def test_spec_scheduler_combines_with_hypergradient_algorithm() -> None:
    spec = _spec("ours_lr_momentum", search={"scheduler": "pbt"})
    assert spec.scheduler == "pbt"
    assert spec.trainable_algorithm == "ours_lr_momentum"


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            {"asha": {"reduction_factor": 1}},
            "search.asha.reduction_factor = 1: Input should be greater than 1",
        ),
        (
            {"asha": {"grace_period": 0}},
            "search.asha.grace_period = 0: Input should be greater than or equal to 1",
        ),
        (
            {"asha": {"grace_period": 21}},
            "search.asha.grace_period = 21: allowed [1, 20] (search.asha.max_t, "
            "default the budget)",
        ),
        (
            {"asha": {"max_t": 50}},
            "search.asha.max_t = 50: allowed [1, 20] (budget.hyperparameter_steps)",
        ),
        (
            {"pbt": {"perturbation_interval": 0}},
            "search.pbt.perturbation_interval = 0: Input should be greater than or "
            "equal to 1",
        ),
        (
            {"scheduler": "pbt", "pbt": {"perturbation_interval": 20}},
            "search.pbt.perturbation_interval = 20: allowed [1, 19] (below "
            "budget.hyperparameter_steps, so a checkpoint exists to exploit before "
            "trials finish)",
        ),
        (
            {"penalty": float("nan")},
            "search.penalty = nan: Input should be a finite number",
        ),
        (
            {"searcher": "grid"},
            "search.searcher = 'grid': Input should be 'grid_seeded', 'bayesopt' "
            "or 'tpe'",
        ),
    ],
    ids=[
        "reduction-factor-1",
        "grace-period-0",
        "grace-period-above-budget",
        "max-t-above-budget",
        "pbt-interval-0",
        "pbt-interval-at-budget",
        "penalty-nan",
        "unknown-searcher",
    ],
)
def test_spec_search_refused_with_field_value_and_range(
    search: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        _spec("asha", search=search)
    assert str(caught.value) == message


def test_cli_flags_set_searcher_and_scheduler() -> None:
    args = build_parser().parse_args(
        [
            "submit",
            "uci_energy",
            "ours_lr_momentum",
            "--scheduler",
            "pbt",
            "--searcher",
            "tpe",
            "--samples",
            "4",
        ]
    )
    request = spec_request(args)
    assert request["search"] == {"searcher": "tpe", "scheduler": "pbt"}
    spec = resolve_spec(request)
    assert (spec.searcher, spec.scheduler) == ("tpe", "pbt")

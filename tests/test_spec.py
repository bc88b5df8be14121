"""StudySpec: defaults from configs/, and refusals that name field, value and rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hposvc.errors import SpecError
from hposvc.spec import StudySpec, config_dir, resolve_spec


def spec_with(**fields: Any) -> dict[str, Any]:
    return {"dataset": "uci_energy", "algorithm": "ours_lr"} | fields


def test_resolve_spec_takes_defaults_from_configs() -> None:
    spec = resolve_spec(spec_with())
    assert spec.budget.hyperparameter_steps == 400
    assert spec.budget.weight_steps == 10
    assert spec.budget.batch_size is None
    assert spec.hypergradient.neumann_terms == 5
    assert spec.hypergradient.hyperparameter_lr == 0.05
    assert spec.model.hidden_sizes == [50]
    assert (spec.initial.log10_lr.low, spec.initial.log10_lr.high) == (-6.0, -1.0)


def test_resolve_spec_user_values_override_configs() -> None:
    spec = resolve_spec(spec_with(budget={"hyperparameter_steps": 7}, samples=3))
    assert spec.budget.hyperparameter_steps == 7
    assert spec.budget.weight_steps == 10
    assert spec.samples == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"unknown": 1},
            "unknown = 1: unknown field; allowed: dataset, algorithm, name",
        ),
        (
            {"budget": {"hyperparameter_step": 3}},
            "budget.hyperparameter_step = 3: unknown field; allowed: "
            "hyperparameter_steps, weight_steps",
        ),
        (
            {"initial": {"momentum": {"low": 0, "high": 1, "mid": 0.5}}},
            "initial.momentum.mid = 0.5: unknown field; allowed: low, high",
        ),
        (
            {"budget": {"hyperparameter_steps": -1}},
            "budget.hyperparameter_steps = -1: Input should be greater than or "
            "equal to 1",
        ),
        (
            {"hypergradient": {"hyperparameter_lr": float("nan")}},
            "hypergradient.hyperparameter_lr = nan: Input should be a finite number",
        ),
        (
            {"initial": {"log10_lr": [-1, -6]}},
            "initial.log10_lr = [-1, -6]: range is reversed: low -1.0 is above "
            "high -6.0",
        ),
        (
            {"initial": {"log10_lr": []}},
            "initial.log10_lr = []: a range is a pair [low, high]; got []",
        ),
        (
            {"initial": {"momentum": [0.5, 1.5]}},
            "momentum range [0.5, 1.5] must lie within [0.0, 1.0]",
        ),
        (
            {"resources": {"cpu": -1}},
            "resources.cpu = -1: Input should be greater than 0",
        ),
        (
            {"resources": {"gpu": -0.5}},
            "resources.gpu = -0.5: Input should be greater than or equal to 0",
        ),
        (
            {"name": "a/b"},
            "name = 'a/b': a name is 1-64 characters of A-Z a-z 0-9 _ . -",
        ),
        (
            {"name": "a--resume-1"},
            "name = 'a--resume-1': '--' is reserved",
        ),
    ],
    ids=[
        "unknown-top",
        "unknown-nested",
        "unknown-deep",
        "negative-steps",
        "nan",
        "reversed-range",
        "empty-range",
        "momentum-outside",
        "negative-cpu",
        "negative-gpu",
        "name-with-slash",
        "name-with-double-hyphen",
    ],
)
def test_resolve_spec_refuses_bad_values(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        resolve_spec(spec_with(**fields))
    assert message in str(caught.value)


def test_resolve_spec_unknown_algorithm_lists_valid_ids() -> None:
    with pytest.raises(SpecError) as caught:
        resolve_spec({"dataset": "uci_energy", "algorithm": "sgd"})
    text = str(caught.value)
    assert text.startswith("algorithm = 'sgd': unknown algorithm; choose one of ")
    for algorithm in ("random", "ours_lr", "ours_lr_momentum", "ours_hdlr_momentum"):
        assert algorithm in text


def test_resolve_spec_unknown_dataset_lists_valid_ids() -> None:
    with pytest.raises(SpecError) as caught:
        resolve_spec({"dataset": "mnist", "algorithm": "random"})
    text = str(caught.value)
    assert text.startswith("dataset = 'mnist': unknown dataset; choose one of ")
    assert "uci_energy" in text and "uci_power" in text


def test_resolve_spec_missing_dataset_is_named() -> None:
    with pytest.raises(SpecError, match=r"^dataset: required$"):
        resolve_spec({"algorithm": "random"})


def test_resolve_spec_reports_every_problem_on_its_own_line() -> None:
    with pytest.raises(SpecError) as caught:
        resolve_spec(spec_with(samples=0, seed=-1))
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("samples = 0")
    assert lines[1].startswith("seed = -1")


@pytest.mark.parametrize(
    "path", sorted(config_dir().glob("*.yaml")), ids=lambda p: Path(p).stem
)
def test_config_files_validate_as_spec_layers(path: Path) -> None:
    from hposvc.catalog import ALGORITHMS

    stem = path.stem
    request = (
        {"dataset": "uci_energy", "algorithm": stem}
        if stem in ALGORITHMS
        else {"dataset": stem, "algorithm": "random"}
    )
    assert isinstance(resolve_spec(request), StudySpec)

"""Tests of the trial algorithms on the real UCI energy data, in float64."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from hposvc.spec import StudySpec, resolve_spec
from trainables.algorithms import TrialAlgorithm
from trainables.trial import build_trial, initial_hyperparameters

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ENERGY = SHARED_DATA / "uci" / "energy"

pytestmark = pytest.mark.skipif(
    not (ENERGY / "data.txt").exists(),
    reason=f"shared UCI energy data not found at {ENERGY.resolve()}",
)

DTYPE = torch.float64
ALGORITHMS = ["random", "ours_lr", "ours_lr_momentum", "ours_hdlr_momentum"]
HYPERGRADIENT_ALGORITHMS = ALGORITHMS[1:]


@pytest.fixture(autouse=True)
def _shared_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPOSVC_DATA_DIR", str(SHARED_DATA.resolve()))
    monkeypatch.delenv("HPOSVC_CONFIG_DIR", raising=False)


def _spec(algorithm: str, *, seed: int = 0, batch_size: int | None = None) -> StudySpec:
    return resolve_spec(
        {
            "dataset": "uci_energy",
            "algorithm": algorithm,
            "seed": seed,
            "budget": {
                "hyperparameter_steps": 10,
                "weight_steps": 10,
                "batch_size": batch_size,
            },
        }
    )


def _trial(algorithm: str, trial_index: int = 0, **spec_options: Any) -> TrialAlgorithm:
    return build_trial(_spec(algorithm, **spec_options), trial_index, dtype=DTYPE)


def _steps(trial: TrialAlgorithm, count: int) -> None:
    for _ in range(count):
        trial.hyperparameter_step()


def _leaves(tree: Any) -> list[tuple[str, torch.Tensor]]:
    if isinstance(tree, dict):
        return [
            (f"{key}.{name}", leaf)
            for key, value in tree.items()
            for name, leaf in _leaves(value)
        ]
    return [("", tree)]


def _assert_trees_close(left: Any, right: Any) -> None:
    left_leaves, right_leaves = _leaves(left), _leaves(right)
    assert [name for name, _ in left_leaves] == [name for name, _ in right_leaves]
    for (name, a), (_, b) in zip(left_leaves, right_leaves, strict=True):
        torch.testing.assert_close(
            a, b, rtol=0, atol=1e-12, msg=lambda text, name=name: f"{name}: {text}"
        )


@pytest.mark.parametrize(
    ("algorithm", "batch_size"),
    [
        *[pytest.param(name, None, id=f"{name}-full-batch") for name in ALGORITHMS],
        pytest.param("random", 64, id="random-batch-64"),
        pytest.param("ours_lr_momentum", 64, id="ours_lr_momentum-batch-64"),
    ],
)
def test_trial_checkpoint_resumes_exactly(
    algorithm: str, batch_size: int | None
) -> None:
    k = 3
    uninterrupted = _trial(algorithm, batch_size=batch_size)
    _steps(uninterrupted, 2 * k)

    first_half = _trial(algorithm, batch_size=batch_size)
    _steps(first_half, k)
    buffer = io.BytesIO()
    torch.save(first_half.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    resumed = _trial(algorithm, batch_size=batch_size)
    resumed.load_state_dict(state)
    _steps(resumed, k)

    _assert_trees_close(resumed.params, uninterrupted.params)
    _assert_trees_close(resumed.buffers, uninterrupted.buffers)
    _assert_trees_close(resumed.raw, uninterrupted.raw)
    assert resumed.hyperparameter_steps_done == 2 * k
    assert resumed.skipped_updates == uninterrupted.skipped_updates == 0


def test_trial_checkpoint_of_other_algorithm_is_refused() -> None:
    state = _trial("ours_lr").state_dict()

    with pytest.raises(ValueError, match="checkpoint is of algorithm 'ours_lr'"):
        _trial("ours_lr_momentum").load_state_dict(state)


@pytest.mark.parametrize("trial_index", [0, 3])
def test_build_trial_same_seed_same_start_for_every_algorithm(trial_index: int) -> None:
    specs = [_spec(algorithm) for algorithm in ALGORITHMS]
    initial = [initial_hyperparameters(spec, trial_index) for spec in specs]
    trials = [build_trial(spec, trial_index, dtype=DTYPE) for spec in specs]

    assert all(value == initial[0] for value in initial[1:]), initial
    for trial in trials[1:]:
        _assert_trees_close(trial.params, trials[0].params)


def test_build_trial_other_trial_index_or_seed_differs() -> None:
    spec, other_seed = _spec("ours_lr"), _spec("ours_lr", seed=1)
    reference = build_trial(spec, 0, dtype=DTYPE)

    for other_spec, trial_index in ((spec, 1), (other_seed, 0)):
        assert initial_hyperparameters(other_spec, trial_index) != (
            initial_hyperparameters(spec, 0)
        )
        other = build_trial(other_spec, trial_index, dtype=DTYPE)
        for name, weight in reference.params.items():
            assert not torch.equal(other.params[name], weight), name


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {
        key
        for key in before
        if not all(
            torch.equal(a, b)
            for (_, a), (_, b) in zip(
                _leaves(before[key]), _leaves(after[key]), strict=True
            )
        )
    }


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        pytest.param("random", set(), id="random"),
        pytest.param("ours_lr", {"log10_lr", "log10_weight_decay"}, id="ours_lr"),
        pytest.param(
            "ours_lr_momentum",
            {"log10_lr", "log10_weight_decay", "logit_momentum"},
            id="ours_lr_momentum",
        ),
        pytest.param(
            "ours_hdlr_momentum",
            {"log10_lr", "log10_weight_decay", "logit_momentum"},
            id="ours_hdlr_momentum",
        ),
    ],
)
def test_hyperparameter_step_changes_only_tuned_hyperparameters(
    algorithm: str, expected: set[str]
) -> None:
    trial = _trial(algorithm)
    before = {key: _clone(value) for key, value in trial.raw.items()}

    _steps(trial, 3)

    assert _changed(before, trial.raw) == expected
    assert trial.skipped_updates == 0


def _clone(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _clone(value) for key, value in tree.items()}
    return tree.clone()


def test_hyperparameter_step_per_weight_lr_entries_move_apart() -> None:
    trial = _trial("ours_hdlr_momentum")

    _steps(trial, 3)

    log10_lr = trial.raw["log10_lr"]
    assert set(log10_lr) == set(trial.params)
    for name, weight in trial.params.items():
        assert log10_lr[name].shape == weight.shape
    flat = torch.cat([value.reshape(-1) for value in log10_lr.values()])
    assert flat.unique().numel() > 1


@pytest.mark.parametrize(
    ("algorithm", "rows"),
    [
        pytest.param("random", 614 + 78, id="random-train-and-validation"),
        *[pytest.param(name, 614, id=name) for name in HYPERGRADIENT_ALGORITHMS],
    ],
)
def test_build_trial_training_rows(algorithm: str, rows: int) -> None:
    problem = _trial(algorithm).problem

    assert problem.train_x.shape[0] == rows
    assert problem.train_y.shape[0] == rows


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hyperparameter_step_keeps_no_autograd_graph(algorithm: str) -> None:
    trial = _trial(algorithm)

    _steps(trial, 2)

    for where, tree in (
        ("params", trial.params),
        ("buffers", trial.buffers),
        ("raw", trial.raw),
    ):
        for name, tensor in _leaves(tree):
            assert tensor.grad_fn is None, f"{where}{name}"
            assert tensor.grad is None, f"{where}{name}"
    for name, weight in trial.params.items():
        assert not weight.requires_grad, name

"""The Gaussian-process searcher, driven directly (no Ray) and inside Tune."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from hposvc.search import IndexedSearcher, SearchSpace, build_searcher
from hposvc.search.bayesopt import BayesOptSearcher
from hposvc.spec import resolve_spec

BOUNDS = {"x": (-2.0, 3.0), "y": (0.0, 1.0)}
Objective = Callable[[dict[str, float]], float]


def _bowl(point: dict[str, float]) -> float:
    return (point["x"] - 0.5) ** 2 + (point["y"] - 0.3) ** 2


def _corner(point: dict[str, float]) -> float:
    # The optimum sits on the bounds: x = -2, y = 0.
    return point["x"] + point["y"]


def _searcher(**options: float) -> BayesOptSearcher:
    return BayesOptSearcher(bounds=BOUNDS, random_points=5, seed=3, **options)  # type: ignore[arg-type]


def _drive(
    searcher: BayesOptSearcher,
    objective: Objective,
    trials: int,
    *,
    start: int = 0,
    concurrent: int = 1,
) -> list[dict[str, float]]:
    """Ask/tell ``trials`` times, keeping up to ``concurrent`` trials running."""
    points: list[dict[str, float]] = []
    running: list[tuple[str, dict[str, float]]] = []
    for number in range(start, start + trials):
        point = searcher.suggest(f"t{number}")
        assert isinstance(point, dict)
        points.append(point)
        running.append((f"t{number}", point))
        if len(running) >= concurrent:
            trial_id, done = running.pop(0)
            searcher.on_trial_complete(trial_id, {"objective": objective(done)})
    for trial_id, done in running:
        searcher.on_trial_complete(trial_id, {"objective": objective(done)})
    return points


def _suggest(searcher: Searcher, trial_id: str) -> dict:
    config = searcher.suggest(trial_id)
    assert isinstance(config, dict)
    return config


def _within(point: dict[str, float]) -> bool:
    return all(low <= point[key] <= high for key, (low, high) in BOUNDS.items())


def test_bayesopt_guided_points_distinct_and_within_bounds() -> None:
    searcher = _searcher()
    points = _drive(searcher, _bowl, 11)

    guided = points[5:]
    assert all(_within(point) for point in points)
    keys = {(round(p["x"], 9), round(p["y"], 9)) for p in guided}
    assert len(keys) == len(guided)
    assert len(searcher.observations) == 11
    assert searcher.best() is not None
    assert searcher.best()[1] < min(_bowl(p) for p in points[:5])  # type: ignore[index]


@pytest.mark.parametrize("concurrent", [1, 3], ids=["sequential", "three-running"])
def test_bayesopt_optimum_on_bound_never_crashes(concurrent: int) -> None:
    searcher = _searcher()
    points = _drive(searcher, _corner, 14, concurrent=concurrent)

    assert len(points) == 14
    assert all(_within(point) for point in points)
    assert searcher.stop_reason is None
    assert min(_corner(p) for p in points) < -1.5


def test_bayesopt_concurrent_points_not_near_identical() -> None:
    searcher = _searcher()
    _drive(searcher, _bowl, 6)
    running = [_suggest(searcher, f"r{number}") for number in range(3)]
    for index, left in enumerate(running):
        for right in running[index + 1 :]:
            assert (
                max(abs(left["x"] - right["x"]) / 5, abs(left["y"] - right["y"])) > 1e-2
            )


def test_bayesopt_duplicate_result_is_kept_not_raised() -> None:
    searcher = _searcher()
    point = _suggest(searcher, "a")
    searcher.on_trial_complete("a", {"objective": 1.0})
    searcher.live["b"] = dict(point)
    searcher.on_trial_complete("b", {"objective": 2.0})
    assert searcher.observations == [(point, 1.0)]


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ({"objective": math.nan}, False),
        ({"objective": math.inf}, False),
        ({}, False),
        (None, True),
        ({"objective": 1e9}, False),
    ],
    ids=["nan", "inf", "missing", "error", "huge"],
)
def test_bayesopt_registers_penalty_for_bad_results(
    result: dict[str, float] | None, error: bool
) -> None:
    searcher = _searcher(penalty=7.0)
    searcher.suggest("a")
    searcher.on_trial_complete("a", result, error=error)
    assert [objective for _, objective in searcher.observations] == [7.0]
    assert searcher._optimizer.space.target.tolist() == [-7.0]


def test_bayesopt_restore_continues_history(tmp_path: Path) -> None:
    uninterrupted = _searcher()
    expected = _drive(uninterrupted, _bowl, 10)

    first = _searcher()
    _drive(first, _bowl, 8)
    first.suggest("t8")  # still running when the study is interrupted
    first.save(str(tmp_path / "state.pkl"))

    restored = _searcher()
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.observations == first.observations
    assert restored.suggested == 9
    running = first.live["t8"]
    restored.on_trial_complete("t8", {"objective": _bowl(running)})
    later = _drive(restored, _bowl, 1, start=9)

    # Same history, same random streams: the same proposals as never stopping.
    assert [running, *later] == [pytest.approx(point) for point in expected[8:]]
    assert len(restored.observations) == 10
    assert not list(tmp_path.glob("*.tmp"))


def test_bayesopt_restore_refuses_other_bounds(tmp_path: Path) -> None:
    searcher = _searcher()
    searcher.save(str(tmp_path / "state.pkl"))
    other = BayesOptSearcher(bounds={"x": (0.0, 1.0), "y": (0.0, 1.0)})
    with pytest.raises(ValueError, match="saved bounds"):
        other.restore(str(tmp_path / "state.pkl"))


def test_bayesopt_failing_gp_stops_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    searcher = _searcher()
    _drive(searcher, _bowl, 5)

    def broken() -> dict[str, float]:
        raise RuntimeError("matrix not positive definite")

    monkeypatch.setattr(searcher._optimizer, "suggest", broken)
    assert searcher.suggest("t5") == Searcher.FINISHED
    assert searcher.stop_reason is not None
    assert "matrix not positive definite" in searcher.stop_reason
    assert searcher.suggest("t6") == Searcher.FINISHED


def test_indexed_searcher_numbers_trials_and_converts_units() -> None:
    spec = resolve_spec(
        {
            "dataset": "uci_energy",
            "algorithm": "bayesopt",
            "initial": {"momentum": [0.9, 0.9]},
        }
    )
    searcher = build_searcher(spec)
    assert isinstance(searcher, ConcurrencyLimiter)
    indexed = searcher.searcher
    assert isinstance(indexed, IndexedSearcher)
    space = SearchSpace.from_spec(spec)
    assert set(space.free) == {"log10_lr", "log10_weight_decay"}

    configs = [_suggest(searcher, f"t{number}") for number in range(3)]
    assert [config["trial_index"] for config in configs] == [0, 1, 2]
    for config in configs:
        assert 1e-6 <= config["lr"] <= 1e-1
        assert 1e-7 <= config["weight_decay"] <= 1e-2
        assert config["momentum"] == 0.9
    assert indexed.get_state() == {"next_index": 3}


@pytest.mark.usefixtures("ray_session")
def test_bayesopt_in_tune_with_optimum_on_bound_completes(tmp_path: Path) -> None:
    space = SearchSpace(
        free={"log10_lr": (-6.0, -1.0)},
        fixed={"log10_weight_decay": -4.0, "momentum": 0.5},
    )
    inner = BayesOptSearcher(bounds=space.free, random_points=2, seed=0)
    searcher = ConcurrencyLimiter(IndexedSearcher(inner, space), max_concurrent=2)

    def trainable(config: dict) -> dict[str, float]:
        # Smallest lr is best: the GP keeps proposing the lower bound.
        return {"objective": math.log10(config["lr"]) + 6.0}

    grid = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=6, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()

    assert len(grid) == 6
    assert not grid.errors
    indices = sorted(grid[i].config["trial_index"] for i in range(len(grid)))
    assert indices == list(range(6))

"""TPE through Ray Tune's HyperOptSearch, seeded from the study seed."""

from __future__ import annotations

from hposvc.search import build_searcher
from hposvc.spec import resolve_spec


def _suggestions(seed: int, count: int = 8) -> list[dict]:
    spec = resolve_spec(
        {"dataset": "uci_energy", "algorithm": "tpe", "seed": seed, "samples": count}
    )
    searcher = build_searcher(spec)
    assert searcher is not None
    configs = []
    for number in range(count):
        config = searcher.suggest(f"t{number}")
        assert isinstance(config, dict)
        configs.append(config)
        # A deterministic result, so the guided points depend only on the seed.
        searcher.on_trial_complete(
            f"t{number}", {"objective": abs(config["momentum"] - 0.5)}
        )
    return configs


def test_tpe_same_seed_same_suggestions() -> None:
    first, second = _suggestions(seed=11), _suggestions(seed=11)
    assert first == second
    assert [config["trial_index"] for config in first] == list(range(8))


def test_tpe_other_seed_other_suggestions() -> None:
    assert _suggestions(seed=11) != _suggestions(seed=12)


def test_tpe_suggestions_within_initial_ranges() -> None:
    for config in _suggestions(seed=5):
        assert 1e-6 <= config["lr"] <= 1e-1
        assert 1e-7 <= config["weight_decay"] <= 1e-2
        assert 0.0 <= config["momentum"] <= 1.0

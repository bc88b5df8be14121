"""What every study-level searcher and scheduler of hposvc shares.

Searchers and schedulers rank trials by one metric, :data:`OBJECTIVE`
(minimised), that every trial reports: its validation loss, clipped to the
spec's ``search.penalty`` and replaced by it when not finite. A diverged
trial therefore never hands NaN to a Gaussian process, and a scheduler never
has to compare NaN.

The contract of a searcher here (a Ray Tune ``Searcher``):

- it searches the unconstrained space of :class:`SearchSpace` (log10 lr,
  log10 weight decay, momentum); :class:`IndexedSearcher` turns each point into
  the natural ``lr`` / ``weight_decay`` / ``momentum`` config keys that
  :func:`trainables.trial.initial_hyperparameters` reads, and numbers the
  trials ``trial_index = 0, 1, ...`` in order of suggestion, so that trial
  ``k`` gets the same network weights as trial ``k`` of any other study with
  the same seed;
- everything needed to continue after ``Tuner.restore`` is in its saved state
  (``save`` / ``restore`` for the innermost searcher, ``get_state`` /
  ``set_state`` for wrappers, as Ray's ``SearchGenerator`` expects); saves are
  written to a temporary file and swapped in;
- it is only called from the Tune driver's thread, so it needs no locks;
- it may end the search early with ``Searcher.FINISHED``, setting
  ``stop_reason``, which the study records in ``summary.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from hposvc.spec import StudySpec

__all__ = [
    "MODE",
    "OBJECTIVE",
    "IndexedSearcher",
    "SearchSpace",
    "scheduling_objective",
]

#: The metric every searcher and scheduler of hposvc minimises.
OBJECTIVE = "objective"
MODE = "min"


def scheduling_objective(validation_loss: float, penalty: float) -> float:
    """The validation loss clipped to ``penalty``; ``penalty`` when not finite."""
    if not math.isfinite(validation_loss):
        return penalty
    return min(validation_loss, penalty)


@dataclass(frozen=True)
class SearchSpace:
    """The initial-hyperparameter box of a study in search units.

    Attributes:
        free: Searched dimensions and their ``(low, high)`` bounds, in
            ``log10_lr``, ``log10_weight_decay`` and ``momentum``.
        fixed: Dimensions whose range is a single value.
    """

    free: dict[str, tuple[float, float]]
    fixed: dict[str, float]

    @classmethod
    def from_spec(cls, spec: StudySpec) -> SearchSpace:
        ranges = {
            "log10_lr": spec.initial.log10_lr,
            "log10_weight_decay": spec.initial.log10_weight_decay,
            "momentum": spec.initial.momentum,
        }
        return cls(
            free={k: (r.low, r.high) for k, r in ranges.items() if r.low < r.high},
            fixed={k: r.low for k, r in ranges.items() if r.low == r.high},
        )

    def natural(self, point: Mapping[str, float]) -> dict[str, float]:
        """Config values ``lr``, ``weight_decay``, ``momentum`` of a point."""
        full = self.fixed | {key: float(point[key]) for key in self.free}
        return {
            "lr": 10.0 ** full["log10_lr"],
            "weight_decay": 10.0 ** full["log10_weight_decay"],
            "momentum": full["momentum"],
        }


class IndexedSearcher(Searcher):
    """Wraps a searcher of :class:`SearchSpace` points for hposvc's trainable.

    Each suggestion becomes natural hyperparameters plus the next
    ``trial_index``. The index counter is the wrapper's whole state.

    Args:
        searcher: Suggests points with the keys of ``space.free``.
        space: The study's search space.
    """

    def __init__(self, searcher: Searcher, space: SearchSpace):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.space = space
        self.next_index = 0

    @property
    def stop_reason(self) -> str | None:
        """Why the wrapped searcher ended the search early, if it did."""
        return getattr(self.searcher, "stop_reason", None)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        point = self.searcher.suggest(trial_id)
        if point is None or point == Searcher.FINISHED:
            return point
        config = self.space.natural(point) | {"trial_index": self.next_index}
        self.next_index += 1
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict[str, Any]:
        return {"next_index": self.next_index}

    def set_state(self, state: dict[str, Any]) -> None:
        self.next_index = int(state["next_index"])

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

"""Gaussian-process Bayesian optimisation as a Ray Tune searcher.

Ray's own ``BayesOptSearch`` calls ``bayes_opt.UtilityFunction``, which
bayesian-optimization 2 removed, so :class:`BayesOptSearcher` drives
``bayes_opt.BayesianOptimization`` (3.x) itself, in ask/tell form: ``suggest``
asks the optimiser for a point, ``on_trial_complete`` tells it the result.

Protocol (Clarke et al., 2022, after Snoek et al., 2012): the first
``random_points`` trials start from uniform random points of the search box,
the rest from the maximiser of the upper-confidence-bound acquisition of a
Gaussian process fitted to ``-objective`` (see :mod:`hposvc.search.base`:
the final validation loss, clipped to a finite penalty).

Duplicates: a proposal that coincides with a point already tried or still
running would teach the Gaussian process nothing, so a random point is
explored instead; a result for a point already registered is dropped (the
known result stands). Neither ever raises.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from bayes_opt import BayesianOptimization, acquisition
from bayes_opt.exception import NotUniqueError
from ray.tune.search import Searcher

from hposvc.search.base import MODE, OBJECTIVE, scheduling_objective

__all__ = ["BayesOptSearcher"]

logger = logging.getLogger(__name__)

#: Two points closer than this share of every dimension's width are the same.
DUPLICATE_TOLERANCE = 1e-6
#: A proposal this close to a still-running point counts as a duplicate too:
#: without the running trials' results the GP would propose them again.
PENDING_TOLERANCE = 1e-2
#: Random draws tried before giving up on finding an unexplored point.
EXPLORE_ATTEMPTS = 100
_STATE_VERSION = 1
#: Ray's marker for "no more suggestions", typed to fit ``suggest``'s signature.
_FINISHED: Any = Searcher.FINISHED


class BayesOptSearcher(Searcher):
    """Suggests initial hyperparameters with Gaussian-process Bayesian optimisation.

    Args:
        bounds: ``{dimension: (low, high)}`` of the search box, low < high.
        random_points: Suggestions drawn uniformly at random before the
            Gaussian process takes over.
        kappa: Exploration weight of the upper confidence bound.
        penalty: The objective registered for a non-finite, failed or missing
            result; larger results are clipped to it.
        seed: Seeds the random points and the acquisition's optimiser.
        metric: The minimised result key (default :data:`OBJECTIVE`).

    Attributes:
        stop_reason: Set when the searcher ends the search early (its
            suggestions then are ``Searcher.FINISHED``).
    """

    def __init__(
        self,
        *,
        bounds: dict[str, tuple[float, float]],
        random_points: int = 5,
        kappa: float = 2.576,
        penalty: float = 10.0,
        seed: int = 0,
        metric: str = OBJECTIVE,
    ):
        super().__init__(metric=metric, mode=MODE)
        if not bounds or any(low >= high for low, high in bounds.values()):
            raise ValueError(f"bounds must be non-empty (low, high) pairs: {bounds}")
        self.bounds = dict(bounds)
        self.random_points = random_points
        self.kappa = kappa
        self.penalty = penalty
        self.seed = seed
        self.stop_reason: str | None = None
        self.observations: list[tuple[dict[str, float], float]] = []
        self.live: dict[str, dict[str, float]] = {}
        self.suggested = 0
        self._rng = np.random.default_rng(seed)
        self._optimizer = self._new_optimizer()

    def _new_optimizer(self) -> BayesianOptimization:
        return BayesianOptimization(
            f=None,
            pbounds=self.bounds,
            acquisition_function=acquisition.UpperConfidenceBound(kappa=self.kappa),
            random_state=self.seed,
            verbose=0,
            allow_duplicate_points=False,
        )

    # Ask ---------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | None:
        if self.stop_reason is not None:
            return _FINISHED
        point = self._propose()
        if point is None:
            return _FINISHED
        self.live[trial_id] = point
        self.suggested += 1
        logger.debug("bayesopt: trial %s gets %s", trial_id, point)
        return dict(point)

    def _propose(self) -> dict[str, float] | None:
        if self.suggested < self.random_points or not self.observations:
            return self._explore()
        try:
            proposal = self._optimizer.suggest()
        except Exception as error:  # The GP fit or the acquisition failed.
            self.stop_reason = f"the Gaussian process could not propose: {error}"
            logger.warning("bayesopt stops early: %s", self.stop_reason)
            return None
        point = {key: float(proposal[key]) for key in self.bounds}
        if self._is_known(point):
            logger.info("bayesopt proposed a point already tried; exploring instead")
            return self._explore()
        return point

    def _explore(self) -> dict[str, float] | None:
        for _ in range(EXPLORE_ATTEMPTS):
            point = {
                key: float(self._rng.uniform(low, high))
                for key, (low, high) in self.bounds.items()
            }
            if not self._is_known(point):
                return point
        self.stop_reason = f"no untried point found in {EXPLORE_ATTEMPTS} random draws"
        logger.warning("bayesopt stops early: %s", self.stop_reason)
        return None

    def _is_known(self, point: dict[str, float]) -> bool:
        return any(
            self._close(point, known, DUPLICATE_TOLERANCE)
            for known, _ in self.observations
        ) or any(
            self._close(point, running, PENDING_TOLERANCE)
            for running in self.live.values()
        )

    def _close(
        self, left: dict[str, float], right: dict[str, float], tolerance: float
    ) -> bool:
        return all(
            abs(left[key] - right[key]) <= tolerance * (high - low)
            for key, (low, high) in self.bounds.items()
        )

    # Tell --------------------------------------------------------------------

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        point = self.live.pop(trial_id, None)
        if point is None:
            return
        value = (result or {}).get(self.metric)
        if error or not isinstance(value, int | float):
            objective = self.penalty
        else:
            objective = scheduling_objective(float(value), self.penalty)
        self._register(point, objective)

    def _register(self, point: dict[str, float], objective: float) -> None:
        # bayes_opt maximises; the objective is a loss.
        try:
            self._optimizer.register(params=point, target=-objective)
        except NotUniqueError:
            logger.info("bayesopt: point %s already registered; result kept", point)
            return
        self.observations.append((point, objective))

    # State -------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "bounds": self.bounds,
            "observations": list(self.observations),
            "live": dict(self.live),
            "suggested": self.suggested,
            "stop_reason": self.stop_reason,
            "rng": self._rng.bit_generator.state,
            "optimizer_rng": self._optimizer._random_state.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown bayesopt state version {state.get('version')}")
        if state["bounds"] != self.bounds:
            raise ValueError(
                f"saved bounds {state['bounds']} differ from the study's {self.bounds}"
            )
        self._optimizer = self._new_optimizer()
        self.observations = []
        for point, objective in state["observations"]:
            self._register(point, objective)
        self.live = dict(state["live"])
        self.suggested = int(state["suggested"])
        self.stop_reason = state["stop_reason"]
        self._rng.bit_generator.state = state["rng"]
        self._optimizer._random_state.set_state(state["optimizer_rng"])

    def save(self, checkpoint_path: str) -> None:
        path = Path(checkpoint_path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as handle:
            pickle.dump(self.get_state(), handle)
        temporary.replace(path)

    def restore(self, checkpoint_path: str) -> None:
        with Path(checkpoint_path).open("rb") as handle:
            self.set_state(pickle.load(handle))

    def best(self) -> tuple[dict[str, float], float] | None:
        """The best point registered so far and its objective."""
        finite = [item for item in self.observations if math.isfinite(item[1])]
        return min(finite, key=lambda item: item[1], default=None)

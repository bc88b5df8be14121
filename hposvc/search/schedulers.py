"""Trial schedulers: ASHA early stopping and population-based training.

Both act on hyperparameter steps (the ``hyperparameter_step`` metric, one per
Tune iteration) and minimise :data:`hposvc.search.base.OBJECTIVE`, which is
finite for every trial, so a trial that diverges can neither poison ASHA's
rung cut-offs nor PBT's quantiles.

PBT (Jaderberg et al., 2017) here: every ``perturbation_interval`` steps a
trial in the bottom quantile copies the checkpoint of a trial in the top
quantile (*exploit*) and perturbs the donor's initial hyperparameters
(*explore*): each is multiplied by one of ``perturbation_factors`` or, with
``resample_probability``, drawn afresh from its initial range; the result is
clipped back into that range (momentum also strictly below 1). The trial
keeps its own ``trial_index`` and continues from the donor's step count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler

from hposvc.hypergrad.hyperparameters import MOMENTUM_EPSILON
from hposvc.search.base import MODE, OBJECTIVE
from hposvc.spec import StudySpec

__all__ = ["BoundedPopulationBasedTraining", "build_scheduler", "hyperparameter_bounds"]

logger = logging.getLogger(__name__)

TIME_ATTR = "hyperparameter_step"


def build_scheduler(spec: StudySpec) -> TrialScheduler | None:
    """The spec's scheduler; ``None`` for ``fifo`` (Tune's default)."""
    if spec.scheduler == "asha":
        asha = spec.search.asha
        return ASHAScheduler(
            time_attr=TIME_ATTR,
            metric=OBJECTIVE,
            mode=MODE,
            max_t=asha.max_t or spec.budget.hyperparameter_steps,
            grace_period=asha.grace_period,
            reduction_factor=asha.reduction_factor,
        )
    if spec.scheduler == "pbt":
        return _pbt(spec)
    return None


def hyperparameter_bounds(spec: StudySpec) -> dict[str, tuple[float, float]]:
    """Natural bounds of each hyperparameter: the initial ranges, momentum < 1."""
    initial = spec.initial
    return {
        "lr": (10.0**initial.log10_lr.low, 10.0**initial.log10_lr.high),
        "weight_decay": (
            10.0**initial.log10_weight_decay.low,
            10.0**initial.log10_weight_decay.high,
        ),
        "momentum": (
            min(initial.momentum.low, 1 - MOMENTUM_EPSILON),
            min(initial.momentum.high, 1 - MOMENTUM_EPSILON),
        ),
    }


def _pbt(spec: StudySpec) -> BoundedPopulationBasedTraining:
    pbt = spec.search.pbt
    bounds = hyperparameter_bounds(spec)
    return BoundedPopulationBasedTraining(
        bounds=bounds,
        time_attr=TIME_ATTR,
        metric=OBJECTIVE,
        mode=MODE,
        perturbation_interval=pbt.perturbation_interval,
        hyperparam_mutations=_mutations(bounds),
        quantile_fraction=pbt.quantile_fraction,
        resample_probability=pbt.resample_probability,
        perturbation_factors=pbt.perturbation_factors,
    )


def _mutations(bounds: dict[str, tuple[float, float]]) -> dict[str, Any]:
    # A fixed hyperparameter (low == high) is not mutated at all.
    domains = {
        "lr": tune.loguniform,
        "weight_decay": tune.loguniform,
        "momentum": tune.uniform,
    }
    return {
        key: domains[key](low, high)
        for key, (low, high) in bounds.items()
        if low < high
    }


class BoundedPopulationBasedTraining(PopulationBasedTraining):
    """Ray Tune's PBT, with hposvc's guarantees on what an exploit produces.

    - every perturbed value is clipped into ``bounds``;
    - the exploiting trial keeps its own ``trial_index`` (Tune would copy the
      donor's whole config);
    - a trial that reported ``status == "diverged"`` is never a donor.

    Trials without a checkpoint are never donors already: Tune skips the
    exploit ("no checkpoint for trial ...").

    Args:
        bounds: ``{config key: (low, high)}`` of the mutated hyperparameters.
        **options: Passed to ``PopulationBasedTraining``.
    """

    def __init__(self, *, bounds: dict[str, tuple[float, float]], **options: Any):
        super().__init__(custom_explore_fn=_clipper(bounds), **options)
        self.bounds = bounds

    def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict, dict]:
        config, operations = super()._get_new_config(trial, trial_to_clone)
        config["trial_index"] = trial.config["trial_index"]
        logger.debug(
            "pbt: trial %s exploits trial %s with %s",
            trial.trial_id,
            trial_to_clone.trial_id,
            {key: config[key] for key in self.bounds},
        )
        return config, operations

    def _checkpoint_or_exploit(
        self,
        trial: Any,
        tune_controller: Any,
        upper_quantile: list,
        lower_quantile: list,
    ) -> None:
        if trial in lower_quantile:
            # Asynchronous PBT could pick a donor that is behind this trial;
            # exploiting it would move the trial's step count backwards.
            step = self._trial_state[trial].last_train_time
            ahead = [
                donor
                for donor in upper_quantile
                if self._trial_state[donor].last_train_time >= step
            ]
            if not ahead:
                logger.debug("pbt: no donor at or past step %s for %s", step, trial)
                return
            upper_quantile = ahead
        super()._checkpoint_or_exploit(
            trial, tune_controller, upper_quantile, lower_quantile
        )

    def _quantiles(self) -> tuple[list, list]:
        lower, upper = super()._quantiles()
        donors = [trial for trial in upper if not self._diverged(trial)]
        if not donors:
            return [], []
        return lower, donors

    def _diverged(self, trial: Any) -> bool:
        state = self._trial_state.get(trial)
        result = (state.last_result if state else None) or trial.last_result or {}
        return result.get("status") == "diverged"


def _clipper(
    bounds: dict[str, tuple[float, float]],
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def clip(config: dict[str, Any]) -> dict[str, Any]:
        for key, (low, high) in bounds.items():
            if key in config:
                config[key] = min(max(float(config[key]), low), high)
        return config

    return clip

"""The Ray Tune trainable that runs every trainable-level algorithm.

One :meth:`HyperparameterTrainable.step` is one hyperparameter step (T weight
steps, then the algorithm's hyperparameter update). The config holds the
study's spec as JSON, the trial's index within the study and, when a searcher
or scheduler chooses them, initial ``lr``, ``weight_decay`` and ``momentum``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from hposvc.hypergrad import describe, initial_raw
from hposvc.search.base import OBJECTIVE, scheduling_objective
from hposvc.spec import StudySpec
from trainables.algorithms import TrialAlgorithm
from trainables.trial import HYPERPARAMETER_KEYS, build_trial

__all__ = ["HyperparameterTrainable"]

logger = logging.getLogger(__name__)

_CHECKPOINT_FILE = "trial_state.pt"


class HyperparameterTrainable(tune.Trainable):
    """A trial of any algorithm of :mod:`trainables.algorithms`.

    Reported metrics, every hyperparameter step: ``training_loss``,
    ``validation_loss``, ``test_loss`` (normalised), ``test_loss_original_units``,
    ``lr`` (for per-weight rates the mean, with ``lr_min`` / ``lr_max``),
    ``weight_decay``, ``momentum``, ``hyperparameter_step``, ``weight_steps``,
    ``skipped_updates`` (non-finite hypergradients, in all),
    ``consecutive_skips`` (in a row, up to now), ``trial_index``, ``status``
    (``running``, ``completed`` or ``diverged``, with ``reason``: a non-finite
    training loss, or ``hypergradient.max_consecutive_skips`` skips in a row)
    and ``objective``, the finite validation loss that searchers and
    schedulers rank trials by.

    PBT exploit: Tune gives the trial the donor's perturbed config
    (:meth:`reset_config` or a fresh :meth:`setup`), then loads the donor's
    checkpoint. When the config's ``lr`` / ``weight_decay`` / ``momentum``
    differ from those the checkpoint was taken under, the config's values
    replace the checkpoint's hyperparameters; weights, momentum buffers and
    step counts continue from the donor. Restoring a trial's own checkpoint
    (same config) keeps its hyperparameters, adapted ones included.
    """

    def setup(self, config: dict[str, Any]) -> None:
        self.spec = StudySpec.model_validate(config["spec"])
        self.trial_index = int(config["trial_index"])
        use_gpu = self.spec.resources.gpu > 0 and torch.cuda.is_available()
        if self.spec.resources.gpu > 0 and not use_gpu:
            logger.warning(
                "%s: resources.gpu = %g but torch sees no CUDA device here;"
                " training on the CPU",
                self.trial_name,
                self.spec.resources.gpu,
            )
        torch.set_num_threads(max(1, math.floor(self.spec.resources.cpu)))
        self.algorithm: TrialAlgorithm = build_trial(
            self.spec,
            self.trial_index,
            config=config,
            device="cuda" if use_gpu else "cpu",
            trial_name=f"{self.trial_name or 'trial'} (index {self.trial_index})",
        )
        self.initial = describe(self.algorithm.raw)
        self.wall_seconds = 0.0
        self.config_hyperparameters = {
            key: float(config[key]) for key in HYPERPARAMETER_KEYS if key in config
        }

    def step(self) -> dict[str, Any]:
        started = time.perf_counter()
        metrics: dict[str, Any] = self.algorithm.hyperparameter_step()
        self.wall_seconds += time.perf_counter() - started
        steps_done = self.algorithm.hyperparameter_steps_done
        metrics |= {
            "trial_index": self.trial_index,
            "hyperparameter_step": steps_done,
            "wall_seconds": self.wall_seconds,
            "status": "running",
        } | {f"initial_{key}": value for key, value in self.initial.items()}
        reason = self.algorithm.divergence_reason(metrics["training_loss"])
        if reason is not None:
            metrics["status"] = "diverged"
            metrics["reason"] = reason
            logger.warning("%s diverged: %s", self.trial_name, metrics["reason"])
        elif steps_done >= self.spec.budget.hyperparameter_steps:
            metrics["status"] = "completed"
        metrics[OBJECTIVE] = scheduling_objective(
            metrics["validation_loss"], self.spec.search.penalty
        )
        metrics[tune.result.DONE] = metrics["status"] != "running"
        return metrics

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = self.algorithm.state_dict() | {
            "wall_seconds": self.wall_seconds,
            "config_hyperparameters": self.config_hyperparameters,
        }
        torch.save(state, Path(checkpoint_dir) / _CHECKPOINT_FILE)

    def load_checkpoint(self, checkpoint: Any) -> None:
        # A directory path: save_checkpoint writes files and returns None.
        path = Path(str(checkpoint)) / _CHECKPOINT_FILE
        device = next(iter(self.algorithm.params.values())).device
        state = torch.load(path, map_location=device, weights_only=False)
        self.algorithm.load_state_dict(state)
        self.wall_seconds = float(state.get("wall_seconds", 0.0))
        donor = state.get("config_hyperparameters") or {}
        if self.config_hyperparameters and donor != self.config_hyperparameters:
            self._apply_config_hyperparameters()

    def _apply_config_hyperparameters(self) -> None:
        """Set the raw hyperparameters to the config's (after a PBT exploit)."""
        current = describe(self.algorithm.raw)
        values = {key: current[key] for key in HYPERPARAMETER_KEYS}
        values |= self.config_hyperparameters
        reference = next(iter(self.algorithm.params.values()))
        # initial_raw clips lr into [1e-10, 1] and momentum strictly inside (0, 1).
        raw = initial_raw(
            values["lr"],
            values["weight_decay"],
            values["momentum"],
            per_weight_like=self.algorithm.params
            if self.algorithm.per_weight_lr
            else None,
            dtype=reference.dtype,
            device=reference.device,
        )
        with torch.no_grad():
            for key, value in raw.items():
                target = self.algorithm.raw[key]
                if isinstance(value, dict):
                    for name, leaf in value.items():
                        target[name].copy_(leaf)
                else:
                    target.copy_(value)
        logger.info(
            "%s continues from a donor's checkpoint at hyperparameter step %d with %s",
            self.trial_name,
            self.algorithm.hyperparameter_steps_done,
            self.config_hyperparameters,
        )

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        # Actor reuse: a new trial in this process is built from scratch.
        self.setup(new_config)
        return True

    def cleanup(self) -> None:
        logger.debug("trial %s process %d cleaned up", self.trial_name, os.getpid())

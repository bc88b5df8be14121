"""The Ray Tune trainable: metrics, done flag, checkpoints, actor reuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hposvc.spec import resolve_spec
from trainables.trainable import HyperparameterTrainable


def config_for(algorithm: str, index: int = 0, steps: int = 4) -> dict[str, Any]:
    spec = resolve_spec(
        {
            "dataset": "uci_energy",
            "algorithm": algorithm,
            "budget": {"hyperparameter_steps": steps, "weight_steps": 3},
        }
    )
    return {"spec": spec.model_dump(mode="json"), "trial_index": index}


@pytest.fixture
def trainable_factory(shared_data: Path, tmp_path: Path):
    made: list[HyperparameterTrainable] = []

    def make(config: dict[str, Any]) -> HyperparameterTrainable:
        trainable = HyperparameterTrainable(config=config, storage=None)
        made.append(trainable)
        return trainable

    yield make
    for trainable in made:
        trainable.stop()


def test_train_reports_losses_hyperparameters_and_done(trainable_factory) -> None:
    trainable = trainable_factory(config_for("ours_lr_momentum", steps=2))
    first = trainable.train()
    assert first["hyperparameter_step"] == 1
    assert first["weight_steps"] == 3
    assert first["status"] == "running" and not first["done"]
    for key in (
        "training_loss",
        "validation_loss",
        "test_loss",
        "lr",
        "weight_decay",
        "momentum",
        "initial_lr",
    ):
        assert isinstance(first[key], float)
    assert first["test_loss_original_units"] > first["test_loss"]
    second = trainable.train()
    assert second["status"] == "completed" and second["done"]


def test_save_restore_continues_exactly(trainable_factory, tmp_path: Path) -> None:
    straight = trainable_factory(config_for("ours_lr", steps=6))
    for _ in range(4):
        expected = straight.train()

    interrupted = trainable_factory(config_for("ours_lr", steps=6))
    interrupted.train()
    interrupted.train()
    checkpoint = interrupted.save_checkpoint(str(tmp_path))
    assert checkpoint is None and any(tmp_path.iterdir())

    resumed = trainable_factory(config_for("ours_lr", steps=6))
    resumed.load_checkpoint(str(tmp_path))
    resumed.train()
    result = resumed.train()
    for key in ("training_loss", "validation_loss", "lr", "weight_decay"):
        assert result[key] == expected[key]
    for name, weight in straight.algorithm.params.items():
        assert torch.equal(weight, resumed.algorithm.params[name])


def test_reset_config_builds_the_new_trial(trainable_factory) -> None:
    trainable = trainable_factory(config_for("random", index=0))
    trainable.train()
    assert trainable.reset_config(config_for("ours_lr", index=3))
    fresh = trainable_factory(config_for("ours_lr", index=3))
    assert trainable.trial_index == 3
    assert trainable.algorithm.hyperparameter_steps_done == 0
    for name, weight in fresh.algorithm.params.items():
        assert torch.equal(weight, trainable.algorithm.params[name])

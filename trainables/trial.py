"""Builds one trial's algorithm from a study spec and a trial index."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch

from hposvc.data import Dataset, load_dataset
from hposvc.models import build_model
from hposvc.seeding import InitialHyperparameters, Stream, sample_initial, stream_seed
from hposvc.spec import StudySpec
from trainables.algorithms import ALGORITHM_CLASSES, TrialAlgorithm
from trainables.problem import Problem

__all__ = ["build_trial", "initial_hyperparameters", "resplit_validation"]

logger = logging.getLogger(__name__)

#: Config keys through which a searcher or scheduler sets initial values.
HYPERPARAMETER_KEYS = ("lr", "weight_decay", "momentum")


def initial_hyperparameters(
    spec: StudySpec, trial_index: int, config: Mapping[str, Any] | None = None
) -> InitialHyperparameters:
    """The trial's starting point: the seeded sample, unless the config sets values."""
    sampled = sample_initial(spec.initial, spec.seed, trial_index).as_dict()
    given = {
        key: float(config[key])
        for key in HYPERPARAMETER_KEYS
        if config and key in config
    }
    return InitialHyperparameters(**(sampled | given))


def resplit_validation(dataset: Dataset, share: float) -> Dataset:
    """Hold out the last ``share`` of the training + validation rows for validation.

    Normalisation is kept as loaded: it already used these rows together.
    """
    x, y = dataset.train_and_validation()
    held_out = min(max(1, round(share * x.shape[0])), x.shape[0] - 1)
    cut = x.shape[0] - held_out
    return dataclasses.replace(
        dataset,
        train_x=x[:cut],
        train_y=y[:cut],
        validation_x=x[cut:],
        validation_y=y[cut:],
    )


def build_trial(
    spec: StudySpec,
    trial_index: int,
    *,
    config: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    trial_name: str | None = None,
) -> TrialAlgorithm:
    """The algorithm of trial ``trial_index``, ready to step.

    Weights and initial hyperparameters depend only on ``spec.seed`` and
    ``trial_index`` (and on values a searcher put in ``config``), never on the
    algorithm.
    """
    algorithm_class = ALGORITHM_CLASSES[spec.trainable_algorithm]
    dataset = load_dataset(spec.dataset, seed=spec.seed)
    if spec.budget.validation_share is not None:
        dataset = resplit_validation(dataset, spec.budget.validation_share)
    dataset = dataset.to(device=device, dtype=dtype)
    layer_sizes = [dataset.input_dim, *spec.model.hidden_sizes, dataset.output_dim]
    model = build_model(
        layer_sizes,
        seed=stream_seed(spec.seed, trial_index, Stream.WEIGHTS),
        dtype=dtype,
    ).to(device)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    generator = torch.Generator(device="cpu")
    generator.manual_seed(stream_seed(spec.seed, trial_index, Stream.BATCHES))
    problem = Problem(
        dataset,
        model,
        uses_validation=algorithm_class.uses_validation_split()
        or spec.searches_on_validation,
        batch_size=spec.budget.batch_size,
        generator=generator,
    )
    return algorithm_class(
        problem,
        spec=spec,
        initial=initial_hyperparameters(spec, trial_index, config),
        params=params,
        trial_name=trial_name or f"{spec.algorithm}#{trial_index}",
        trial_index=trial_index,
    )

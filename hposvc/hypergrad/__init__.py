"""The differentiable SGD update and the hypergradient methods built on it."""

from hposvc.hypergrad.hyperparameters import (
    HyperparameterOptimiser,
    RawHyperparameters,
    constrain,
    describe,
    initial_raw,
)
from hposvc.hypergrad.implicit import (
    LinearisedStep,
    linearised_sgd_step,
    neumann_hypergradient,
)
from hposvc.hypergrad.sgd import (
    Params,
    SGDHyperparameters,
    sgd_step,
    sgd_update,
    zeros_like,
)

__all__ = [
    "HyperparameterOptimiser",
    "LinearisedStep",
    "Params",
    "RawHyperparameters",
    "SGDHyperparameters",
    "constrain",
    "describe",
    "initial_raw",
    "linearised_sgd_step",
    "neumann_hypergradient",
    "sgd_step",
    "sgd_update",
    "zeros_like",
]

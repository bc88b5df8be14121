"""Hyperparameters in their unconstrained space, and the optimiser that tunes them.

Every algorithm stores its hyperparameters as a small pytree of tensors::

    {"log10_lr": Tensor | {param name: Tensor},   # scalar, or one per weight
     "log10_weight_decay": Tensor,
     "logit_momentum": Tensor}

:func:`constrain` maps it to the :class:`SGDHyperparameters` an SGD step uses
(lr = 10^x, weight decay = 10^x, momentum = sigmoid(x)); it is differentiable,
so hypergradients arrive in the unconstrained space, where Adam updates them.
After each update the values are projected back inside their bounds: log10 lr
into [-10, 0] (lr in [1e-10, 1]) and logit momentum into a band that keeps
momentum strictly inside (0, 1) even in float32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from hposvc.hypergrad.sgd import SGDHyperparameters
from hposvc.spec import LOG10_LR_BOUNDS

__all__ = [
    "MOMENTUM_EPSILON",
    "HyperparameterOptimiser",
    "RawHyperparameters",
    "constrain",
    "describe",
    "initial_raw",
]

logger = logging.getLogger(__name__)

RawHyperparameters = dict[str, Any]

#: Momentum is kept in [eps, 1 - eps]; 1 - 1e-6 is still below 1 in float32.
MOMENTUM_EPSILON = 1e-6
_LOGIT_BOUND = math.log((1 - MOMENTUM_EPSILON) / MOMENTUM_EPSILON)
KEYS = ("log10_lr", "log10_weight_decay", "logit_momentum")


def initial_raw(
    lr: float,
    weight_decay: float,
    momentum: float,
    *,
    per_weight_like: Mapping[str, Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> RawHyperparameters:
    """Unconstrained hyperparameters from natural values, projected into bounds.

    Args:
        lr, weight_decay, momentum: Natural values (lr > 0, weight decay > 0,
            momentum in [0, 1]; 0 and 1 are moved inside the open interval).
        per_weight_like: When given, lr becomes one value per weight, shaped
            like these parameters, all starting at ``lr``.
    """

    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")

    def scalar(value: float) -> Tensor:
        return torch.tensor(value, dtype=dtype, device=device)

    momentum = min(max(momentum, MOMENTUM_EPSILON), 1 - MOMENTUM_EPSILON)
    log10_lr = scalar(math.log10(lr))
    raw: RawHyperparameters = {
        "log10_lr": log10_lr,
        "log10_weight_decay": scalar(math.log10(weight_decay)),
        "logit_momentum": scalar(math.log(momentum / (1 - momentum))),
    }
    if per_weight_like is not None:
        raw["log10_lr"] = {
            name: torch.full_like(weight, float(log10_lr), dtype=dtype)
            for name, weight in per_weight_like.items()
        }
    project_(raw)
    return raw


def constrain(raw: Mapping[str, Any]) -> SGDHyperparameters:
    """Natural hyperparameters from unconstrained ones (differentiable)."""
    log10_lr = raw["log10_lr"]
    if isinstance(log10_lr, Mapping):
        lr: Tensor | dict[str, Tensor] = {
            name: torch.pow(10.0, value) for name, value in log10_lr.items()
        }
    else:
        lr = torch.pow(10.0, log10_lr)
    return SGDHyperparameters(
        lr=lr,
        weight_decay=torch.pow(10.0, raw["log10_weight_decay"]),
        momentum=torch.sigmoid(raw["logit_momentum"]),
    )


@torch.no_grad()
def project_(raw: RawHyperparameters) -> None:
    """Clip unconstrained values into their bounds, in place."""
    for tensor in _leaves(raw["log10_lr"]):
        tensor.clamp_(*LOG10_LR_BOUNDS)
    raw["logit_momentum"].clamp_(-_LOGIT_BOUND, _LOGIT_BOUND)


@torch.no_grad()
def describe(raw: Mapping[str, Any]) -> dict[str, float]:
    """Natural values for reports; per-weight lr is summarised by mean/min/max."""
    natural = constrain(raw)
    report = {
        "weight_decay": float(natural.weight_decay),
        "momentum": float(natural.momentum),
    }
    if isinstance(natural.lr, Mapping):
        flat = torch.cat([value.reshape(-1) for value in natural.lr.values()])
        report |= {
            "lr": float(flat.mean()),
            "lr_min": float(flat.min()),
            "lr_max": float(flat.max()),
        }
    else:
        report["lr"] = float(natural.lr)
    return report


def _leaves(value: Tensor | Mapping[str, Tensor]) -> Iterable[Tensor]:
    return value.values() if isinstance(value, Mapping) else (value,)


class HyperparameterOptimiser:
    """Adam on the tuned entries of a raw-hyperparameter pytree.

    The tensors of ``raw`` are updated in place. A hypergradient with any
    non-finite entry is refused: nothing changes and :meth:`step` returns
    ``False``, so the caller can count the skip.

    Args:
        raw: The unconstrained hyperparameters (see :func:`initial_raw`).
        tuned: Which of ``log10_lr``, ``log10_weight_decay``,
            ``logit_momentum`` to update; the others stay fixed.
        lr: Adam's learning rate (Clarke et al. use 0.05).
    """

    def __init__(self, raw: RawHyperparameters, *, tuned: Iterable[str], lr: float):
        self.raw = raw
        self.tuned = tuple(tuned)
        unknown = set(self.tuned) - set(KEYS)
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}; use {KEYS}")
        self._params = [leaf for key in self.tuned for leaf in _leaves(raw[key])]
        self._adam = (
            torch.optim.Adam(self._params, lr=lr, fused=True) if self._params else None
        )

    @torch.no_grad()
    def step(self, hypergradient: Mapping[str, Any]) -> bool:
        """Apply one Adam step; ``False`` (and no change) if it is not finite."""
        if self._adam is None:
            return True
        gradients = [g for key in self.tuned for g in _leaves(hypergradient[key])]
        if not all(bool(torch.isfinite(g).all()) for g in gradients):
            return False
        for param, gradient in zip(self._params, gradients, strict=True):
            param.grad = gradient.detach().to(param.dtype)
        self._adam.step()
        self._adam.zero_grad(set_to_none=True)
        project_(self.raw)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {} if self._adam is None else self._adam.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._adam is not None and state:
            self._adam.load_state_dict(state)

"""What a study is: :class:`StudySpec` and the models it is made of.

A spec is resolved in layers, each validated by the same pydantic models:
the built-in defaults of the models below, then ``configs/<dataset>.yaml``,
then ``configs/<algorithm>.yaml``, then whatever the user gave (CLI flags, an
API body, a Python dict). Unknown fields are refused at every level, NaN and
infinities are refused everywhere, and every refusal names the field, the
value and what is allowed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hposvc.catalog import ALGORITHMS
from hposvc.errors import SpecError

__all__ = [
    "Budget",
    "HypergradientSettings",
    "InitialRanges",
    "ModelSettings",
    "Range",
    "Resources",
    "StudySpec",
    "config_dir",
    "format_validation_error",
    "resolve_spec",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_SAMPLES = 10_000

#: Bounds of log10 lr used everywhere (lr is clipped to [1e-10, 1]).
LOG10_LR_BOUNDS = (-10.0, 0.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Range(_Strict):
    """A closed interval ``[low, high]``; ``low == high`` fixes the value.

    Written as ``{"low": a, "high": b}`` or as the pair ``[a, b]``.
    """

    low: float
    high: float

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError(f"a range is a pair [low, high]; got {list(value)!r}")
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.low > self.high:
            raise ValueError(
                f"range is reversed: low {self.low} is above high {self.high}"
            )
        return self

    def within(self, lower: float, upper: float, what: str) -> Range:
        if self.low < lower or self.high > upper:
            raise ValueError(
                f"{what} range [{self.low}, {self.high}] must lie within "
                f"[{lower}, {upper}]"
            )
        return self


class Budget(_Strict):
    """How long each trial trains.

    Attributes:
        hyperparameter_steps: Hyperparameter steps per trial; one Tune
            iteration each.
        weight_steps: T, the SGD steps on the network weights per
            hyperparameter step.
        batch_size: Rows per weight step; ``None`` trains full batch.
        validation_share: Share of training + validation rows held out for
            validation; ``None`` keeps the data set's own split.
    """

    hyperparameter_steps: int = Field(400, ge=1, le=1_000_000)
    weight_steps: int = Field(10, ge=1, le=100_000)
    batch_size: int | None = Field(None, ge=1)
    validation_share: float | None = Field(None, gt=0.0, lt=1.0)


class HypergradientSettings(_Strict):
    """Settings of the hypergradient algorithms (ignored by the others).

    Attributes:
        neumann_terms: i, the terms of the truncated Neumann series that
            approximates the inverse Hessian-like factor (i = 1 gives the
            one-step unrolled hypergradient).
        hyperparameter_lr: Learning rate of Adam on the unconstrained
            hyperparameters (log10 lr, log10 weight decay, logit momentum).
    """

    neumann_terms: int = Field(5, ge=1, le=10_000)
    hyperparameter_lr: float = Field(0.05, gt=0.0, le=10.0)


class InitialRanges(_Strict):
    """Where initial hyperparameters are sampled, uniformly in these units."""

    log10_lr: Range = Range(low=-6.0, high=-1.0)
    log10_weight_decay: Range = Range(low=-7.0, high=-2.0)
    momentum: Range = Range(low=0.0, high=1.0)

    @field_validator("log10_lr")
    @classmethod
    def _lr_bounds(cls, value: Range) -> Range:
        return value.within(*LOG10_LR_BOUNDS, "log10_lr")

    @field_validator("log10_weight_decay")
    @classmethod
    def _wd_bounds(cls, value: Range) -> Range:
        return value.within(-20.0, 1.0, "log10_weight_decay")

    @field_validator("momentum")
    @classmethod
    def _momentum_bounds(cls, value: Range) -> Range:
        return value.within(0.0, 1.0, "momentum")


class Resources(_Strict):
    """Per-trial resources for Ray; fractional GPUs share a device."""

    cpu: float = Field(1.0, gt=0.0, le=1024.0)
    gpu: float = Field(0.0, ge=0.0, le=64.0)


class ModelSettings(_Strict):
    """The network: an MLP with these hidden layer widths and ReLU."""

    hidden_sizes: list[Annotated[int, Field(ge=1, le=65_536)]] = [50]


class StudySpec(_Strict):
    """A whole study: what to train, how, how many trials, on what resources.

    Two studies with the same ``dataset``, ``seed`` and trial index start from
    the same initial hyperparameters and network weights whatever their
    algorithm, so algorithms compare trial by trial.
    """

    dataset: str
    algorithm: str
    name: str | None = Field(None, pattern=NAME_PATTERN)
    samples: int = Field(8, ge=1, le=MAX_SAMPLES)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    budget: Budget = Budget()
    hypergradient: HypergradientSettings = HypergradientSettings()
    initial: InitialRanges = InitialRanges()
    resources: Resources = Resources()
    max_concurrent_trials: int | None = Field(None, ge=1)
    model: ModelSettings = ModelSettings()

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in ALGORITHMS:
            raise ValueError(
                f"unknown algorithm; choose one of {', '.join(ALGORITHMS)}"
            )
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from hposvc.data import dataset_names

        names = dataset_names()
        if value not in names:
            raise ValueError(f"unknown dataset; choose one of {', '.join(names)}")
        return value


def config_dir() -> Path:
    """The folder of per-data-set and per-algorithm YAML defaults.

    ``$HPOSVC_CONFIG_DIR`` when set, else ``configs/`` of this checkout.
    """
    override = os.environ.get("HPOSVC_CONFIG_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "configs"


@cache
def _load_layer(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open() as handle:
        layer = yaml.safe_load(handle) or {}
    if not isinstance(layer, dict):
        raise SpecError(f"{path}: a config file must hold a mapping, not {layer!r}")
    for key in ("dataset", "algorithm", "name"):
        if key in layer:
            raise SpecError(f"{path}: '{key}' cannot be set in a config file")
    return layer


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_spec(request: Mapping[str, Any]) -> StudySpec:
    """Validate a user's spec with the YAML defaults of its data set and algorithm.

    Args:
        request: At least ``dataset`` and ``algorithm``; any other field of
            :class:`StudySpec` overrides the defaults.

    Raises:
        SpecError: With one line per problem, each naming the field, the value
            received and what is allowed.
    """
    layers: dict[str, Any] = {}
    dataset, algorithm = request.get("dataset"), request.get("algorithm")
    # Unknown names are reported by the model itself; only known ones have files.
    for name in (dataset, algorithm):
        if isinstance(name, str) and re.fullmatch(r"[a-z0-9_]+", name):
            layers = _merge(layers, _load_layer(config_dir() / f"{name}.yaml"))
    try:
        return StudySpec.model_validate(_merge(layers, request))
    except ValidationError as error:
        raise SpecError(format_validation_error(error, StudySpec)) from None


def format_validation_error(error: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem: ``field = value: what is wrong / allowed``."""
    lines = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "spec"
        kind, message = item["type"], item["msg"]
        if kind == "extra_forbidden":
            allowed = _fields_at(model, item["loc"][:-1])
            message = f"unknown field; allowed: {', '.join(allowed)}"
        elif kind == "missing":
            lines.append(f"{location}: required")
            continue
        message = message.removeprefix("Value error, ")
        lines.append(f"{location} = {_show(item.get('input'))}: {message}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fields_at(model: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    for part in location:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)

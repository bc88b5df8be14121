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
from typing import Annotated, Any, Literal, Self

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
    "SearchSettings",
    "StudySpec",
    "config_dir",
    "format_validation_error",
    "resolve_spec",
    "validation_problems",
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
            hyperparameters (log10 lr, log10 weight decay, logit momentum);
            for ``baydin``, the step size β of plain SGD on lr itself.
        unroll_steps: K, the weight steps that ``diff_through_opt`` and
            ``long_diff_through_opt`` differentiate through at the end of each
            hyperparameter step; ``None`` unrolls all T of them. Memory grows
            with K. At most ``budget.weight_steps``.
        restart_episodes: ``long_diff_through_opt`` only: restart every
            episode from the initial weights (and zero momentum) after each
            hyperparameter update. ``False`` gives the paper's "medium"
            variant, a look-back over the last K steps without restarts.
        stepped_lr_factor: ``random_stepped_lr`` only: the range of the
            per-trial factor by which lr is multiplied after each
            hyperparameter step (sampled uniformly, once per trial).
        max_consecutive_skips: A trial whose hypergradient is non-finite this
            many times in a row ends as ``diverged``.
    """

    neumann_terms: int = Field(5, ge=1, le=10_000)
    hyperparameter_lr: float = Field(0.05, gt=0.0, le=10.0)
    unroll_steps: int | None = Field(None, ge=1, le=100_000)
    restart_episodes: bool = False
    stepped_lr_factor: Range = Range(low=0.98, high=1.0)
    max_consecutive_skips: int = Field(5, ge=1, le=1_000_000)

    @field_validator("stepped_lr_factor")
    @classmethod
    def _factor_bounds(cls, value: Range) -> Range:
        return value.within(1e-3, 1e3, "stepped_lr_factor")


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


SearcherKind = Literal["grid_seeded", "bayesopt", "tpe"]
SchedulerKind = Literal["fifo", "asha", "pbt"]


class BayesOptSettings(_Strict):
    """Gaussian-process Bayesian optimisation (bayesian-optimization 3.x).

    Attributes:
        kappa: Exploration weight of the upper-confidence-bound acquisition.
    """

    kappa: float = Field(2.576, gt=0.0, le=100.0)


class AshaSettings(_Strict):
    """Asynchronous successive halving over hyperparameter steps.

    Attributes:
        grace_period: Hyperparameter steps every trial runs before it can be
            stopped.
        reduction_factor: Only the best ``1 / reduction_factor`` of the trials
            at a rung go on to the next one.
        max_t: Hyperparameter steps of the last rung; ``None`` = the budget.
    """

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(4.0, gt=1.0, le=1000.0)
    max_t: int | None = Field(None, ge=1)


class PbtSettings(_Strict):
    """Population-based training with checkpoint exploit.

    Attributes:
        perturbation_interval: Hyperparameter steps between exploit/explore
            decisions (paper: 100 weight steps = 10 hyperparameter steps).
        quantile_fraction: Share of the population that exploits the top
            share of the same size.
        resample_probability: Chance that a perturbed hyperparameter is drawn
            afresh from its initial range instead of scaled.
        perturbation_factors: Factors a perturbed value is multiplied by.
    """

    perturbation_interval: int = Field(10, ge=1)
    quantile_fraction: float = Field(0.25, gt=0.0, le=0.5)
    resample_probability: float = Field(0.25, ge=0.0, le=1.0)
    perturbation_factors: tuple[
        Annotated[float, Field(gt=0.0, le=100.0)],
        Annotated[float, Field(gt=0.0, le=100.0)],
    ] = (1.2, 0.8)


class SearchSettings(_Strict):
    """How trials get their initial hyperparameters and which get stopped early.

    Attributes:
        searcher: ``grid_seeded`` (each trial's seeded sample, as random
            search), ``bayesopt`` or ``tpe``; ``None`` = the algorithm's
            default (see ``hposvc algorithms``).
        scheduler: ``fifo`` (no early stopping), ``asha`` or ``pbt``;
            ``None`` = the algorithm's default.
        random_points: Trials of a ``bayesopt`` or ``tpe`` search whose
            initial hyperparameters are drawn at random before the model
            guides the rest; ``samples`` counts both (paper: 5 random, then
            25 guided).
        max_concurrent: Trials a searcher has in flight at once (Ray's
            ``ConcurrencyLimiter``); fewer means each suggestion sees more
            results.
        penalty: The objective that searchers and schedulers see for a
            non-finite validation loss; larger finite losses are clipped to
            it, so one diverged trial cannot dominate a Gaussian process.
    """

    searcher: SearcherKind | None = None
    scheduler: SchedulerKind | None = None
    random_points: int = Field(5, ge=1, le=MAX_SAMPLES)
    max_concurrent: int = Field(4, ge=1, le=MAX_SAMPLES)
    penalty: float = Field(10.0, gt=0.0, le=1e12)
    bayesopt: BayesOptSettings = BayesOptSettings()
    asha: AshaSettings = AshaSettings()
    pbt: PbtSettings = PbtSettings()


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
    name: str | None = None
    samples: int = Field(8, ge=1, le=MAX_SAMPLES)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    budget: Budget = Budget()
    hypergradient: HypergradientSettings = HypergradientSettings()
    initial: InitialRanges = InitialRanges()
    resources: Resources = Resources()
    max_concurrent_trials: int | None = Field(None, ge=1)
    model: ModelSettings = ModelSettings()
    search: SearchSettings = SearchSettings()

    @model_validator(mode="after")
    def _unroll_within_budget(self) -> Self:
        unroll = self.hypergradient.unroll_steps
        if unroll is not None and unroll > self.budget.weight_steps:
            raise ValueError(
                f"hypergradient.unroll_steps = {unroll} exceeds budget.weight_steps"
                f" = {self.budget.weight_steps}; K must be at most T"
            )
        return self

    @model_validator(mode="after")
    def _search_fits_budget(self) -> Self:
        budget = self.budget.hyperparameter_steps
        asha, pbt = self.search.asha, self.search.pbt
        max_t = asha.max_t or budget
        if self.scheduler == "asha" and max_t > budget:
            raise ValueError(
                f"search.asha.max_t = {max_t}: allowed [1, {budget}]"
                " (budget.hyperparameter_steps)"
            )
        if self.scheduler == "asha" and asha.grace_period > max_t:
            raise ValueError(
                f"search.asha.grace_period = {asha.grace_period}: allowed"
                f" [1, {max_t}] (search.asha.max_t, default the budget)"
            )
        if self.scheduler == "pbt" and pbt.perturbation_interval >= budget:
            # The first exploit needs a checkpoint taken before trials end.
            raise ValueError(
                f"search.pbt.perturbation_interval = {pbt.perturbation_interval}:"
                f" allowed [1, {budget - 1}] (below budget.hyperparameter_steps,"
                " so a checkpoint exists to exploit before trials finish)"
            )
        return self

    @property
    def searcher(self) -> str:
        """The searcher that runs: the spec's, else the algorithm's default."""
        info = ALGORITHMS[self.algorithm]
        return self.search.searcher or info.searcher or "grid_seeded"

    @property
    def scheduler(self) -> str:
        """The scheduler that runs: the spec's, else the algorithm's default."""
        info = ALGORITHMS[self.algorithm]
        return self.search.scheduler or info.scheduler or "fifo"

    @property
    def trainable_algorithm(self) -> str:
        """The trainable-level algorithm each trial runs (``random`` for asha...)."""
        return ALGORITHMS[self.algorithm].trainable or self.algorithm

    @property
    def searches_on_validation(self) -> bool:
        """Whether a searcher or scheduler ranks trials by their validation loss.

        Such trials hold the validation split out of training even when their
        trainable-level algorithm would not.
        """
        return self.searcher != "grid_seeded" or self.scheduler != "fifo"

    @field_validator("name")
    @classmethod
    def _name_is_a_safe_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(
                "a name is 1-64 characters of A-Z a-z 0-9 _ . -, starting with a"
                " letter or digit (it becomes a directory and a Ray job id)"
            )
        if value is not None and "--" in value:
            raise ValueError(
                "'--' is reserved (a resumed study's Ray job is <name>--resume-<n>)"
            )
        return value

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
        raise SpecError(
            format_validation_error(error, StudySpec),
            problems=validation_problems(error, StudySpec),
        ) from None


def validation_problems(
    error: ValidationError, model: type[BaseModel]
) -> list[dict[str, Any]]:
    """Each problem as ``{"field", "value", "message"}`` (the API's 422 body).

    ``value`` is the input as received, shown as text when it is not finite.
    """
    problems = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "spec"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            allowed = _fields_at(model, item["loc"][:-1])
            message = f"unknown field; allowed: {', '.join(allowed)}"
        value = item.get("input")
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        elif item["type"] == "missing":
            value = None
        problems.append({"field": field, "value": value, "message": message})
    return problems


def format_validation_error(error: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem: ``field = value: what is wrong / allowed``."""
    lines = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "spec"
        kind, message = item["type"], item["msg"]
        if not item["loc"] and kind == "value_error":
            # Whole-spec checks name their fields and values themselves.
            lines.append(message.removeprefix("Value error, "))
            continue
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

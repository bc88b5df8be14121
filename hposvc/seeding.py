"""Seeds that make studies comparable trial by trial.

Every random choice of trial ``k`` in a study with seed ``s`` draws from its
own stream, derived from ``(s, k, stream)`` with NumPy's ``SeedSequence``.
The streams do not depend on the algorithm, so trial ``k`` of two studies
with the same seed starts from the same hyperparameters and the same network
weights whatever each study's algorithm is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import IntEnum

import numpy as np

from hposvc.spec import InitialRanges

__all__ = ["InitialHyperparameters", "Stream", "sample_initial", "stream_seed"]


class Stream(IntEnum):
    """Independent random streams of one trial."""

    HYPERPARAMETERS = 0
    WEIGHTS = 1
    BATCHES = 2
    ALGORITHM = 3


@dataclass(frozen=True)
class InitialHyperparameters:
    """Natural values a trial starts from."""

    lr: float
    weight_decay: float
    momentum: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def stream_seed(seed: int, trial_index: int, stream: Stream) -> int:
    """A 31-bit seed for one stream of one trial."""
    sequence = np.random.SeedSequence([seed, trial_index, int(stream)])
    return int(sequence.generate_state(1, dtype=np.uint32)[0] >> 1)


def sample_initial(
    ranges: InitialRanges, seed: int, trial_index: int
) -> InitialHyperparameters:
    """Initial hyperparameters of trial ``trial_index``, uniform in each range's units.

    lr and weight decay are uniform in log10; momentum is uniform in [0, 1].
    """
    rng = np.random.default_rng(stream_seed(seed, trial_index, Stream.HYPERPARAMETERS))
    log10_lr = rng.uniform(ranges.log10_lr.low, ranges.log10_lr.high)
    log10_wd = rng.uniform(
        ranges.log10_weight_decay.low, ranges.log10_weight_decay.high
    )
    momentum = rng.uniform(ranges.momentum.low, ranges.momentum.high)
    return InitialHyperparameters(
        lr=math.pow(10.0, log10_lr),
        weight_decay=math.pow(10.0, log10_wd),
        momentum=float(momentum),
    )

"""The algorithms hposvc knows, by id.

This module holds only what the algorithms *are* (their id, what they tune and
whether they hold a validation split out), so that the spec, the CLI and the
API can list and validate them without importing torch or Ray. The code that
runs each algorithm lives in :mod:`trainables.algorithms`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALGORITHMS", "AlgorithmInfo", "algorithm_ids"]


@dataclass(frozen=True)
class AlgorithmInfo:
    """Static description of one algorithm.

    Attributes:
        id: The name used by the CLI, the API and ``configs/<id>.yaml``.
        summary: One line for listings.
        tuned: Hyperparameters the algorithm adapts during training; the rest
            stay at their initial values.
        uses_validation: Whether training holds the validation split out to
            compute hypergradients. Algorithms that do not use it train on
            training + validation combined, as in Clarke et al. (2022).
    """

    id: str
    summary: str
    tuned: tuple[str, ...]
    uses_validation: bool


_ALL = (
    AlgorithmInfo(
        "random",
        "hyperparameters sampled once and fixed for the whole run",
        (),
        False,
    ),
    AlgorithmInfo(
        "ours_lr",
        "implicit Neumann hypergradient through the SGD update: lr, weight decay",
        ("lr", "weight_decay"),
        True,
    ),
    AlgorithmInfo(
        "ours_lr_momentum",
        "as ours_lr, also tuning momentum",
        ("lr", "weight_decay", "momentum"),
        True,
    ),
    AlgorithmInfo(
        "ours_hdlr_momentum",
        "as ours_lr_momentum with one learning rate per network weight",
        ("lr", "weight_decay", "momentum"),
        True,
    ),
)

ALGORITHMS: dict[str, AlgorithmInfo] = {info.id: info for info in _ALL}


def algorithm_ids() -> list[str]:
    """The ids of every algorithm, in catalogue order."""
    return list(ALGORITHMS)

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
        trainable: For a study-level method (a searcher or scheduler over
            trials), the trainable-level algorithm its trials run by default;
            ``None`` for a trainable-level algorithm itself.
        searcher: The searcher the algorithm selects by default, if any.
        scheduler: The trial scheduler the algorithm selects by default, if any.
    """

    id: str
    summary: str
    tuned: tuple[str, ...]
    uses_validation: bool
    trainable: str | None = None
    searcher: str | None = None
    scheduler: str | None = None


_ALL = (
    AlgorithmInfo(
        "random",
        "hyperparameters sampled once and fixed for the whole run",
        (),
        False,
    ),
    AlgorithmInfo(
        "random_stepped_lr",
        "as random, with lr multiplied by a sampled factor each hyperparameter step",
        (),
        False,
    ),
    AlgorithmInfo(
        "bayesopt",
        "Gaussian-process Bayesian optimisation of the initial hyperparameters",
        (),
        True,
        trainable="random",
        searcher="bayesopt",
    ),
    AlgorithmInfo(
        "tpe",
        "hyperopt's tree-structured Parzen estimator over the same space",
        (),
        True,
        trainable="random",
        searcher="tpe",
    ),
    AlgorithmInfo(
        "asha",
        "seeded random initialisations, early-stopped by ASHA",
        (),
        True,
        trainable="random",
        scheduler="asha",
    ),
    AlgorithmInfo(
        "pbt",
        "population-based training: exploit checkpoints, perturb hyperparameters",
        ("lr", "weight_decay", "momentum"),
        True,
        trainable="random",
        scheduler="pbt",
    ),
    AlgorithmInfo(
        "diff_through_opt",
        "exact hypergradient through the last K unrolled weight steps",
        ("lr", "weight_decay", "momentum"),
        True,
    ),
    AlgorithmInfo(
        "long_diff_through_opt",
        "exact hypergradient through a whole short episode, restarted each update",
        ("lr", "weight_decay", "momentum"),
        True,
    ),
    AlgorithmInfo(
        "lorraine",
        "implicit hypergradient with a Neumann series (Lorraine et al. 2020): "
        "weight decay",
        ("weight_decay",),
        True,
    ),
    AlgorithmInfo(
        "baydin",
        "hypergradient descent on lr after every weight step (Baydin et al. 2018)",
        ("lr",),
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

"""hyperopt's tree-structured Parzen estimator, through Ray Tune's ``HyperOptSearch``.

TPE (Bergstra et al., 2011) models the density of good and of bad points
separately and proposes where their ratio is largest. Its first
``random_points`` suggestions are random. Seeded from the study seed, a
study's sequence of suggestions is reproducible when results arrive in the
same order.
"""

from __future__ import annotations

from ray import tune
from ray.tune.search.hyperopt import HyperOptSearch

from hposvc.search.base import MODE, OBJECTIVE, SearchSpace

__all__ = ["tpe_searcher"]


def tpe_searcher(
    space: SearchSpace, *, seed: int, random_points: int, metric: str = OBJECTIVE
) -> HyperOptSearch:
    """A TPE searcher over the free dimensions of ``space``."""
    return HyperOptSearch(
        space={key: tune.uniform(low, high) for key, (low, high) in space.free.items()},
        metric=metric,
        mode=MODE,
        n_initial_points=random_points,
        random_state_seed=seed,
    )

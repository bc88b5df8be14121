"""Study-level search: searchers that choose trials' initial hyperparameters and
schedulers that stop or exploit trials, all on Ray Tune.

:func:`build_searcher` and :func:`~hposvc.search.schedulers.build_scheduler`
turn a :class:`~hposvc.spec.StudySpec` into what ``tune.TuneConfig`` takes.
"""

from __future__ import annotations

from ray.tune.search import ConcurrencyLimiter, Searcher

from hposvc.search.base import (
    MODE,
    OBJECTIVE,
    IndexedSearcher,
    SearchSpace,
    scheduling_objective,
)
from hposvc.search.schedulers import build_scheduler
from hposvc.spec import StudySpec

__all__ = [
    "MODE",
    "OBJECTIVE",
    "IndexedSearcher",
    "SearchSpace",
    "build_scheduler",
    "build_searcher",
    "scheduling_objective",
    "searcher_stop_reason",
]


def build_searcher(spec: StudySpec) -> Searcher | None:
    """The spec's searcher, limited in concurrency; ``None`` for ``grid_seeded``.

    With ``None`` the study runs trials ``0 .. samples-1`` from their seeded
    samples (a grid over the trial index).
    """
    if spec.searcher == "grid_seeded":
        return None
    space = SearchSpace.from_spec(spec)
    if not space.free:
        # Nothing to search: every trial would start from the same point.
        return None
    inner: Searcher
    if spec.searcher == "bayesopt":
        from hposvc.search.bayesopt import BayesOptSearcher

        inner = BayesOptSearcher(
            bounds=space.free,
            random_points=spec.search.random_points,
            kappa=spec.search.bayesopt.kappa,
            penalty=spec.search.penalty,
            seed=spec.seed,
        )
    else:
        from hposvc.search.tpe import tpe_searcher

        inner = tpe_searcher(
            space, seed=spec.seed, random_points=spec.search.random_points
        )
    limit = min(spec.search.max_concurrent, spec.max_concurrent_trials or spec.samples)
    return ConcurrencyLimiter(IndexedSearcher(inner, space), max_concurrent=limit)


def searcher_stop_reason(searcher: Searcher | None) -> str | None:
    """Why a searcher built by :func:`build_searcher` ended its search early."""
    while searcher is not None:
        reason = getattr(searcher, "stop_reason", None)
        if isinstance(reason, str):
            return reason
        searcher = getattr(searcher, "searcher", None)
    return None

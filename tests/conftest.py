"""Session-wide fixtures: the shared UCI data and one local Ray per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Ray's chatter, off for the whole session (set before Ray is imported anywhere).
for _key, _value in {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    # Downloads go to a closed loopback port: tests never reach the internet,
    # and a data set missing from ../shared/data fails at once.
    "HPOSVC_UCI_DATA_URL": "http://127.0.0.1:9/{source_name}/data.txt",
    "HPOSVC_UCI_PERMUTATION_URL": "http://127.0.0.1:9/{title}/permutation_indices.txt",
}.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` of the checkout, as ``HPOSVC_DATA_DIR``."""
    if not (SHARED_DATA / "uci" / "energy" / "data.txt").is_file():
        pytest.skip(f"shared UCI data not found at {SHARED_DATA}")
    os.environ["HPOSVC_DATA_DIR"] = str(SHARED_DATA)
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session(shared_data: Path) -> Iterator[None]:
    """One local Ray (2 CPUs, no dashboard) for every test that needs it."""
    import ray

    ray.init(
        address="local",  # never attach to a `ray start` cluster on this machine
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        log_to_driver=False,
    )
    yield
    ray.shutdown()

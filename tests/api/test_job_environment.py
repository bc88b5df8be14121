"""What a study's Ray Job is given: paths that hold in the job's own directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.ray_jobs import RayJobs
from hposvc.settings import ServiceSettings


def test_job_environment_makes_relative_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPOSVC_CONFIG_DIR", "configs")
    settings = ServiceSettings(
        redis_url="redis://127.0.0.1:6379/0",
        data_dir=Path("../data"),
        results_dir=Path("runs"),
    )

    env = RayJobs(settings).job_environment()

    assert env["HPOSVC_DATA_DIR"] == str((tmp_path / "../data").resolve())
    assert env["HPOSVC_RESULTS_DIR"] == str(tmp_path / "runs")
    assert env["HPOSVC_CONFIG_DIR"] == str(tmp_path / "configs")
    assert env["REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"

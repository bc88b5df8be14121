"""The ``hposvc`` command, end to end on real data with a local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hposvc.cli import main


def run_cli(*args: str, env_data: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI in ``cwd`` with the data directory given relative to it,
    as the README's first command does (trial processes have other cwds)."""
    env = {
        "HPOSVC_DATA_DIR": os.path.relpath(env_data, cwd),
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "hposvc.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_submit_energy_writes_summary(shared_data: Path, tmp_path: Path) -> None:
    completed = run_cli(
        "submit",
        "uci_energy",
        "ours_lr",
        "--samples",
        "3",
        "--seed",
        "7",
        "--hyperparameter-steps",
        "6",
        "--num-cpus",
        "2",
        "--results-dir",
        str(tmp_path),
        env_data=shared_data,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    summary_line = [
        line for line in completed.stdout.splitlines() if line.startswith("summary: ")
    ]
    assert summary_line, completed.stdout
    summary_path = Path(summary_line[-1].removeprefix("summary: ").strip())
    assert summary_path.parent.parent == tmp_path
    summary = json.loads(summary_path.read_text())

    assert summary["spec"]["seed"] == 7
    assert [t["index"] for t in summary["trials"]] == [0, 1, 2]
    for trial in summary["trials"]:
        assert trial["status"] == "completed"
        assert trial["hyperparameter_steps"] == 6
        assert trial["wall_seconds"] > 0
        assert set(trial["initial"]) == {"lr", "weight_decay", "momentum"}
        for key in ("lr", "weight_decay", "momentum"):
            assert trial["final"][key] > 0
        assert trial["final_test_loss"] == pytest.approx(
            trial["final_test_loss_normalised"] * _target_variance(shared_data)
        )
        # ours_lr adapts lr; momentum stays where it started.
        assert trial["final"]["lr"] != trial["initial"]["lr"]
        assert trial["final"]["momentum"] == pytest.approx(
            trial["initial"]["momentum"], rel=1e-5
        )
    assert summary["best_trial"]["index"] in {0, 1, 2}
    assert "best trial:" in completed.stdout


def _target_variance(shared_data: Path) -> float:
    from hposvc.data import load_dataset

    dataset = load_dataset("uci_energy", shared_data)
    return dataset.target_std**2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["submit", "uci_energy", "nope"], "algorithm = 'nope': unknown algorithm"),
        (["submit", "nope", "random"], "dataset = 'nope': unknown dataset"),
        (["submit", "uci_energy", "random", "--samples", "0"], "samples = 0"),
        (["submit", "uci_energy", "random", "--cpus-per-trial", "-1"], "resources.cpu"),
        (
            ["submit", "uci_energy", "random", "--hyperparameter-steps", "0"],
            "budget.hyperparameter_steps = 0",
        ),
    ],
    ids=["algorithm", "dataset", "samples", "cpu", "steps"],
)
def test_submit_bad_input_exits_with_one_line(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    error = capsys.readouterr().err
    assert expected in error
    assert error.count("\n") == 1
    assert "Traceback" not in error


def test_gpu_request_on_cpu_cluster_is_refused(
    shared_data: Path, tmp_path: Path, ray_session: None
) -> None:
    from hposvc.errors import SpecError
    from hposvc.spec import resolve_spec
    from hposvc.study import run_study

    spec = resolve_spec(
        {"dataset": "uci_energy", "algorithm": "random", "resources": {"gpu": 1}}
    )
    with pytest.raises(SpecError, match=r"resources.gpu = 1.0: .* has 0 in all"):
        run_study(spec, results_dir=tmp_path)


def test_algorithms_and_datasets_list_ids_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hposvc.catalog import ALGORITHMS
    from hposvc.data import dataset_names

    assert main(["algorithms"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(ALGORITHMS)
    assert main(["datasets"]) == 0
    ids = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert ids == dataset_names()
    assert {"uci_energy", "uci_kin8nm", "uci_power"} <= set(ids)


def test_resume_of_unknown_study_exits_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HPOSVC_API_URL", raising=False)

    assert main(["resume", "nowhere", "--results-dir", str(tmp_path)]) == 2

    error = capsys.readouterr().err
    assert error == (
        f"hposvc: error: no study 'nowhere' in {tmp_path.resolve()} "
        "(no spec.json there)\n"
    )


def test_resume_continues_an_interrupted_study(
    tmp_path: Path,
    ray_session: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import os
    import signal

    from hposvc.spec import resolve_spec
    from hposvc.study import run_study

    def interrupt_after_first_trial(event: dict) -> None:
        if event["type"] == "trial_completed":
            os.kill(os.getpid(), signal.SIGINT)

    spec = resolve_spec(
        {
            "dataset": "uci_energy",
            "algorithm": "random",
            "samples": 2,
            "max_concurrent_trials": 1,
            "budget": {"hyperparameter_steps": 4, "weight_steps": 2},
        }
    )
    from hposvc.errors import StudyInterrupted

    with pytest.raises(StudyInterrupted):
        run_study(
            spec,
            results_dir=tmp_path,
            study_id="halted",
            sinks=[interrupt_after_first_trial],
        )
    monkeypatch.delenv("HPOSVC_API_URL", raising=False)

    code = main(["resume", "halted", "--results-dir", str(tmp_path), "--no-progress"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "study halted: resuming 2 trials of random" in out
    assert "trials: 2 completed" in out
    assert f"summary: {tmp_path / 'halted' / 'summary.json'}" in out

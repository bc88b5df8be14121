"""The CLI against a running service: submit --api, list, status, cancel, resume."""

from __future__ import annotations

import secrets
import threading

import pytest

from hposvc.cli import main
from hposvc.client import ServiceClient
from hposvc.store import StudyStore
from tests.api.support import API_TOKEN, TINY, ApiProcess, InProcessApi


def test_submit_with_api_follows_the_study_to_its_final_table(
    api: ApiProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HPOSVC_API_TOKEN", API_TOKEN)
    name = f"cli-{secrets.token_hex(3)}"
    flags = ["--samples", "2", "--hyperparameter-steps", "3", "--weight-steps", "2"]

    code = main(["submit", "uci_energy", "random", *flags, "--name", name,
                 "--api", api.url, "--no-progress"])  # fmt: skip

    out = capsys.readouterr().out
    assert code == 0, out
    assert f"study {name}: completed" in out
    assert "initial → final" in out
    assert main(["list", "--api", api.url]) == 0
    assert name in capsys.readouterr().out
    assert main(["status", name, "--api", api.url]) == 0
    shown = capsys.readouterr().out
    assert f"study {name}: completed (2/2 trials done)" in shown
    assert "random on uci_energy, seed 0" in shown and "best trial: " in shown
    assert main(["status", name, "--api", api.url, "--json"]) == 0
    assert '"status": "completed"' in capsys.readouterr().out
    assert main(["cancel", name, "--api", api.url]) == 0
    assert f"study {name}: completed (it had ended already)" in capsys.readouterr().out


def test_service_commands_without_a_url_fail_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("HPOSVC_API_URL", raising=False)
    assert main(["list"]) == 2
    assert "HPOSVC_API_URL" in capsys.readouterr().err


def test_resume_with_api_follows_the_resumed_run_to_its_end(
    fake_api: InProcessApi,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("HPOSVC_API_TOKEN", API_TOKEN)
    settings = fake_api.service.settings
    store = StudyStore.from_url(str(settings.redis_url), settings.key_prefix)
    name = f"cli-r-{secrets.token_hex(3)}"
    with ServiceClient(fake_api.url, token=API_TOKEN) as client:
        client.submit(TINY | {"name": name})
        client.cancel(name)
    fake_api.ray.job_status = "STOPPED"
    # Stands in for the resumed Ray job, finishing a moment after the resume.
    finish = threading.Timer(
        1.0, store.append, (name, {"type": "study_completed", "study_id": name})
    )
    finish.start()

    code = main(["resume", name, "--api", fake_api.url, "--no-progress"])

    finish.join()
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"study {name} resumed on {fake_api.url} (resume 1, Ray job " in out
    assert f"study {name}: completed" in out

"""No autograd graph is retained: peak memory after 200 hyperparameter steps.

Each algorithm runs in a fresh Python process, which reports its peak resident
set size (``ru_maxrss``) after 10 and after 200 hyperparameter steps; a graph
kept alive from one step to the next would make the peak grow with the steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from hposvc.spec import resolve_spec
    from trainables.trial import build_trial

    torch.set_num_threads(1)
    spec = resolve_spec({"dataset": "uci_energy", "algorithm": sys.argv[1],
                         "budget": {"hyperparameter_steps": 200, "weight_steps": 10}})
    trial = build_trial(spec, 0)
    peaks = {}
    for step in range(1, 201):
        trial.hyperparameter_step()
        if step in (10, 200):
            peaks[step] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(peaks))
    """
)


@pytest.mark.parametrize(
    "algorithm",
    ["diff_through_opt", "ours_lr", "ours_lr_momentum", "ours_hdlr_momentum"],
)
def test_peak_memory_does_not_grow_with_hyperparameter_steps(
    algorithm: str, shared_data: Any
) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, algorithm],
        cwd=REPO,
        env=os.environ | {"HPOSVC_DATA_DIR": str(shared_data)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    peaks = json.loads(completed.stdout.strip().splitlines()[-1])
    after_10, after_200 = peaks["10"], peaks["200"]
    assert after_200 <= 1.10 * after_10, peaks

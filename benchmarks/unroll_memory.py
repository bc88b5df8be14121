"""Peak memory of ``diff_through_opt`` as the unroll length K grows.

Each K runs in a fresh Python process: it builds a UCI energy trial, notes its
resident set size, runs some hyperparameter steps (T weight steps, the last K
of them unrolled) and reports the growth of its peak resident set size over
that starting point, the memory the unrolled graph needs. Growth should be
roughly linear in K and independent of the number of steps.

Usage::

    HPOSVC_DATA_DIR=../shared/data python benchmarks/unroll_memory.py \\
        [--unroll 1 5 10] [--hidden 400] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import json, resource, sys
import torch
from hposvc.spec import resolve_spec
from trainables.trial import build_trial

unroll, hidden, steps = (int(value) for value in sys.argv[1:4])
torch.set_num_threads(1)
spec = resolve_spec({
    "dataset": "uci_energy", "algorithm": "diff_through_opt",
    "budget": {"hyperparameter_steps": steps, "weight_steps": 10},
    "hypergradient": {"unroll_steps": unroll},
    "model": {"hidden_sizes": [hidden]},
})
trial = build_trial(spec, 0)
trial.weight_steps(2, trial.natural_hyperparameters())
with open("/proc/self/statm") as handle:
    start_kib = int(handle.read().split()[1]) * resource.getpagesize() // 1024
for _ in range(steps):
    trial.hyperparameter_step()
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"start_kib": start_kib, "peak_kib": peak_kib}))
"""


def measure(unroll: int, hidden: int, steps: int) -> dict[str, int]:
    """Start and peak resident memory (KiB) of one fresh process."""
    completed = subprocess.run(
        [sys.executable, "-c", WORKER, str(unroll), str(hidden), str(steps)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--unroll", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--hidden", type=int, default=400, help="hidden units")
    parser.add_argument("--steps", type=int, default=20, help="hyperparameter steps")
    args = parser.parse_args()

    rows = []
    for unroll in args.unroll:
        figures = measure(unroll, args.hidden, args.steps)
        growth = max(figures["peak_kib"] - figures["start_kib"], 1)
        rows.append((unroll, figures["peak_kib"], growth))

    baseline = rows[0][2]
    print(f"diff_through_opt on uci_energy, MLP [{args.hidden}], T = 10")
    print(f"{'K':>4} {'peak RSS MiB':>13} {'unroll MiB':>11} {'ratio':>7}")
    for unroll, peak, growth in rows:
        print(
            f"{unroll:>4} {peak / 1024:>13.1f} {growth / 1024:>11.1f}"
            f" {growth / baseline:>7.2f}"
        )


if __name__ == "__main__":
    main()

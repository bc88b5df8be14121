"""Time per hyperparameter step of each algorithm, as ratios measured side by side.

Each round times every algorithm (and plain ``torch.optim.SGD`` on the same
network and data) for the same number of hyperparameter steps, in an
interleaved order, so machine noise hits all of them alike; the median over
rounds is reported as a ratio to ``random`` and to ``torch.optim.SGD``.

    HPOSVC_DATA_DIR=../shared/data .venv/bin/python benchmarks/step_time.py

One thread, float32, UCI energy at each algorithm's own budget (T = 10 weight
steps per hyperparameter step, full batch; long_diff_through_opt: episodes of
200 steps). Times are per weight step, so every algorithm compares; "trial s"
is the compute of one whole trial at its default budget.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from hposvc.spec import resolve_spec
from trainables.trial import build_trial

ALGORITHMS = [
    "random",
    "random_stepped_lr",
    "diff_through_opt",
    "long_diff_through_opt",
    "lorraine",
    "baydin",
    "ours_lr",
    "ours_lr_momentum",
    "ours_hdlr_momentum",
]


def trial_stepper(algorithm: str, dataset: str) -> tuple[Callable[[], None], int, int]:
    """A hyperparameter step of trial 1, its weight steps, and the trial's budget."""
    spec = resolve_spec({"dataset": dataset, "algorithm": algorithm})
    trial = build_trial(spec, trial_index=1)
    budget = spec.budget
    return trial.hyperparameter_step, budget.weight_steps, budget.hyperparameter_steps


def torch_sgd_stepper(dataset: str) -> Callable[[], None]:
    """T steps of torch.optim.SGD plus the same evaluation the trials report."""
    spec = resolve_spec({"dataset": dataset, "algorithm": "random"})
    trial = build_trial(spec, trial_index=1)
    problem = trial.problem
    model = problem.model
    optimiser = torch.optim.SGD(
        model.parameters(), lr=1e-3, momentum=0.5, weight_decay=1e-5
    )
    x, y = problem.train_x, problem.train_y
    steps = spec.budget.weight_steps

    def step() -> None:
        for _ in range(steps):
            optimiser.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimiser.step()
        problem.evaluate(dict(model.named_parameters()))

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="uci_energy")
    parser.add_argument("--steps", type=int, default=40, help="per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--algorithms", nargs="*", default=ALGORITHMS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    spec = resolve_spec({"dataset": args.dataset, "algorithm": "random"})
    steppers = {
        "torch.optim.SGD": (
            torch_sgd_stepper(args.dataset),
            spec.budget.weight_steps,
            spec.budget.hyperparameter_steps,
        )
    }
    steppers |= {name: trial_stepper(name, args.dataset) for name in args.algorithms}
    timings: dict[str, list[float]] = {name: [] for name in steppers}
    for stepper, _, _ in steppers.values():  # warm-up
        stepper()
    for round_index in range(args.rounds):
        names = list(steppers)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            stepper, weight_steps, _ = steppers[name]
            # Time per weight step, so episodes of any length compare.
            repeats = max(1, args.steps * spec.budget.weight_steps // weight_steps)
            started = time.perf_counter()
            for _ in range(repeats):
                stepper()
            elapsed = time.perf_counter() - started
            timings[name].append(elapsed / (repeats * weight_steps))

    median = {name: statistics.median(values) for name, values in timings.items()}
    print(
        f"{args.dataset}: median of {args.rounds} rounds, 1 thread; times per "
        "weight step (a hyperparameter step is T of them, plus its update)"
    )
    print(
        f"{'algorithm':<24}{'us/step':>9}{'× random':>10}{'× SGD':>8}"
        f"{'T':>5}{'trial s':>9}"
    )
    for name, seconds in median.items():
        _, weight_steps, hyperparameter_steps = steppers[name]
        trial_seconds = seconds * weight_steps * hyperparameter_steps
        print(
            f"{name:<24}{seconds * 1e6:>9.1f}"
            f"{seconds / median['random']:>10.2f}"
            f"{seconds / median['torch.optim.SGD']:>8.2f}"
            f"{weight_steps:>5}{trial_seconds:>9.2f}"
        )


if __name__ == "__main__":
    main()

"""Time per hyperparameter step of each algorithm, as ratios measured side by side.

Each round times every algorithm (and plain ``torch.optim.SGD`` on the same
network and data) for the same number of hyperparameter steps, in an
interleaved order, so machine noise hits all of them alike; the median over
rounds is reported as a ratio to ``random`` and to ``torch.optim.SGD``.

    HPOSVC_DATA_DIR=../shared/data .venv/bin/python benchmarks/step_time.py

One thread, float32, UCI energy at the paper's budget shape (T = 10 weight
steps per hyperparameter step, full batch).
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


def trial_stepper(algorithm: str, dataset: str) -> Callable[[], None]:
    spec = resolve_spec({"dataset": dataset, "algorithm": algorithm})
    trial = build_trial(spec, trial_index=1)
    return trial.hyperparameter_step


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

    steppers = {"torch.optim.SGD": torch_sgd_stepper(args.dataset)}
    steppers |= {name: trial_stepper(name, args.dataset) for name in args.algorithms}
    timings: dict[str, list[float]] = {name: [] for name in steppers}
    for stepper in steppers.values():  # warm-up
        stepper()
    for round_index in range(args.rounds):
        names = list(steppers)
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            started = time.perf_counter()
            for _ in range(args.steps):
                steppers[name]()
            timings[name].append((time.perf_counter() - started) / args.steps)

    median = {name: statistics.median(values) for name, values in timings.items()}
    weight_steps = resolve_spec({"dataset": args.dataset, "algorithm": "random"})
    per_trial_steps = weight_steps.budget.hyperparameter_steps
    print(
        f"{args.dataset}: median of {args.rounds} rounds × {args.steps} "
        "hyperparameter steps, 1 thread"
    )
    print(
        f"{'algorithm':<22}{'ms/step':>10}{'× random':>10}{'× SGD':>10}{'s/trial':>10}"
    )
    for name, seconds in median.items():
        print(
            f"{name:<22}{seconds * 1e3:>10.3f}"
            f"{seconds / median['random']:>10.2f}"
            f"{seconds / median['torch.optim.SGD']:>10.2f}"
            f"{seconds * per_trial_steps:>10.2f}"
        )


if __name__ == "__main__":
    main()

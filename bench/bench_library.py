"""Benchmark: one training epoch of each library model, on the CPU and (when there is one) the GPU,
timed side by side in one run with the same data, options and seed.

    .venv/bin/python bench/bench_library.py [--epochs 5] [--threads 1]

Each model is prepared as a worker prepares it (inference.models.LIBRARY) and fitted with
inference.svi.run_svi for `--epochs` epochs; the first epoch (warm-up: JIT, allocator, data on
the device) is reported apart from the median of the others.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ETH = ROOT.parent / "shared" / "data" / "ethusd_tweets.csv"


def epoch_times(name: str, device: str, epochs: int) -> tuple[float, float, int]:
    """(first epoch s, median later epoch s, steps per epoch)."""
    from inference.events import Metric
    from inference.models import LIBRARY
    from inference.svi import run_svi
    from kiln.library import DataRef, get_card, parse_options

    card = get_card(name)
    options = parse_options(card, {"epochs": epochs} if "epochs" in card.defaults else {})
    if "steps" in card.defaults:  # the hmm: full-batch steps, no epochs; time 100 of them
        options["steps"] = 100 * epochs
    data = (
        DataRef("builtin", "digits") if "digits" in card.data else
        DataRef("csv", ETH.name, ETH.read_bytes())
    )  # fmt: skip
    problem = LIBRARY[name].prepare(options, data, seed=0, device=device)
    marks = [time.perf_counter()]
    per_epoch = problem.steps_per_epoch if problem.steps_per_epoch > 1 else 100
    for event in run_svi(
        problem.model, problem.guide, (), None, steps=problem.steps,
        lr=float(options["lr"]), elbo=problem.elbo, device=device, batch=problem.batch,
        steps_per_epoch=per_epoch, evaluate=None, loss_items=problem.loss_items,
        max_plate_nesting=problem.max_plate_nesting,
    ):  # fmt: skip
        if isinstance(event, Metric) and event.name == "train_elbo":
            if device == "cuda":
                import torch

                torch.cuda.synchronize()
            marks.append(time.perf_counter())
    laps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return laps[0], statistics.median(laps[1:]) if len(laps) > 1 else laps[0], per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    print(f"one epoch per model, {args.epochs} epochs, torch {torch.__version__},"
          f" {args.threads} CPU thread(s), devices: {', '.join(devices)}")  # fmt: skip
    print(f"{'model':<16} {'steps/epoch':>11} " + " ".join(
        f"{d + ' first':>11} {d + ' epoch':>11}" for d in devices) + (
        "  gpu speed-up" if len(devices) > 1 else ""))  # fmt: skip
    for name in ("bnn-classifier", "vae", "forecast-linreg", "forecast-bnn", "hmm"):
        row = {d: epoch_times(name, d, args.epochs) for d in devices}
        steps = row["cpu"][2]
        cells = " ".join(f"{row[d][0]:>10.3f}s {row[d][1]:>10.3f}s" for d in devices)
        ratio = f"  {row['cpu'][1] / row['cuda'][1]:.2f}x" if "cuda" in row else ""
        label = name + (" (100 steps)" if name == "hmm" else "")
        print(f"{label:<16} {steps:>11} {cells}{ratio}")


if __name__ == "__main__":
    main()

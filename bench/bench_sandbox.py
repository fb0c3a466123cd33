"""The sandbox's cost: a user's model file (eight schools, SVI) fitted in this process by
inference.usertasks against the same fit through worker.sandbox (a process forked from the
worker's zygote, limits, the pipe), side by side, for a short and a longer fit. The first
sandbox of a worker process also starts the zygote (the torch + Pyro import, once).

    .venv/bin/python bench/bench_sandbox.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pyro

from inference.usertasks import SviRun, svi_fit
from kiln.specs import UserSviFitSpec
from worker.sandbox.process import Sandbox, SandboxLimits
from worker.sandbox.wire import as_bytes_array

ROOT = Path(__file__).resolve().parents[1]
SOURCE = (ROOT / "examples" / "eight_schools.py").read_text()
DATA_BYTES = (ROOT / "examples" / "eight_schools.json").read_bytes()
LIMITS = SandboxLimits(
    memory_mb=4096, cpu_s=3600, wall_s=3600, open_files=256, processes=4096, file_mb=64,
    output_bytes=65536, network="auto", max_message_bytes=1 << 30,
)  # fmt: skip


def in_process(steps: int) -> float:
    pyro.clear_param_store()
    run = SviRun(
        source=SOURCE, filename="eight_schools.py", function="model",
        data=json.loads(DATA_BYTES), guide="AutoNormal", guide_function=None, seed=1,
        device="cpu", steps=steps, lr=0.02, optim="Adam", elbo="auto", num_samples=1000,
        checkpoint_every_steps=0, checkpoint_every_s=0.0,
    )  # fmt: skip
    started = time.perf_counter()
    events = svi_fit(run)
    try:
        while True:
            next(events)
    except StopIteration:
        pass
    return time.perf_counter() - started


def sandboxed(steps: int) -> tuple[float, int]:
    spec = UserSviFitSpec(model="eight_schools.py", model_file="eight_schools.py", steps=steps,
                          lr=0.02, seed=1, num_samples=1000)  # fmt: skip
    header: dict[str, Any] = {
        "spec": spec.model_dump(mode="json"), "device": "cpu", "source": SOURCE,
        "data_name": "eight_schools.json", "checkpoint_every_steps": 0, "checkpoint_every_s": 0.0,
    }  # fmt: skip
    sandbox = Sandbox(LIMITS, "bench")
    started = time.perf_counter()
    run = sandbox.run(header, {"data": as_bytes_array(DATA_BYTES)})
    events = 0
    try:
        while True:
            next(run)
            events += 1
    except StopIteration:
        pass
    return time.perf_counter() - started, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    in_process(5)  # warm this process's imports and caches first: the fair baseline
    cold, _ = sandboxed(5)  # starts this process's zygote (imports torch, Pyro once)
    print(f"first sandbox of a worker process (zygote start included): {cold:.2f} s")
    print(f"{'steps':>6} {'in process s':>13} {'sandbox s':>10} {'extra s':>8} {'ratio':>6}"
          f" {'events':>7}  (median of {args.repeats})")  # fmt: skip
    for steps in (10, 1000):
        here = statistics.median(in_process(steps) for _ in range(args.repeats))
        runs = [sandboxed(steps) for _ in range(args.repeats)]
        there = statistics.median(r[0] for r in runs)
        print(f"{steps:>6} {here:>13.2f} {there:>10.2f} {there - here:>8.2f}"
              f" {there / here:>6.2f} {runs[0][1]:>7}")  # fmt: skip


if __name__ == "__main__":
    main()

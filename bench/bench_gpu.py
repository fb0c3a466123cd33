"""Benchmark: the whole service on a GPU machine (issue 20's GPU run), in one prepared command.

    python bench/bench_gpu.py [--members 16384] [--steps 1000] [--sweep-steps 200] [--quick]

On the embedded defaults (SQLite + the embedded broker, a fresh KILN_HOME), with one
`kiln worker --queues gpu` and one `kiln worker --queues cpu`, each job submitted from a shell
as a user would (`python -m kiln.cli submit ... --wait --json`), times side by side:
- the rugged fit (1000 steps, AutoNormal, Trace_ELBO) on the cpu queue and on the gpu queue
  (`--device cuda`), submit -> succeeded and the job's own run time;
- a sweep of `--members` bootstrap fits through the service on the GPU (vectorised batches),
  submit -> every member succeeded, and the same sweep's first 256 members on the CPU worker;
- then bench/bench_library.py: one epoch of each library model (BNN, VAE, forecast, HMM) on
  the CPU and on the GPU (the engine, as a worker prepares it).
Without CUDA it says so and times the CPU side only (a smoke run: --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"
KILN = [sys.executable, "-m", "kiln.cli"]


def rugged_path() -> Path:
    """The rugged data beside the checkout (../shared/data)."""
    path = SHARED / "rugged_data.csv"
    if not path.exists():
        raise SystemExit(f"{path} not found (on a device machine, copy ../shared/data there)")
    return path


def kiln(env: dict[str, str], *args: str, timeout: float = 600) -> dict[str, object]:
    done = subprocess.run([*KILN, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"kiln {' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def start_worker(env: dict[str, str], queues: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115  (kept open for the worker's life)
    proc = subprocess.Popen([*KILN, "worker", "--queues", queues, "--name", name], env=env,
                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if b"ready." in log.read_bytes():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise SystemExit(f"worker {name} did not start:\n{log.read_text()[-3000:]}")


def fit(env: dict[str, str], device: str, steps: int) -> tuple[float, float]:
    queue = "gpu" if device == "cuda" else "cpu"
    start = time.perf_counter()
    job = kiln(env, "submit", "fit", "--model", "linreg", "--data", str(rugged_path()),
               "--formula", FORMULA, "--steps", str(steps), "--elbo", "Trace_ELBO", "--seed",
               "0", "--device", device, "--queue", queue, "--wait", "--json")  # fmt: skip
    wall = time.perf_counter() - start
    assert job["status"] == "succeeded", job
    return wall, float(job["duration_s"])  # type: ignore[arg-type]


def sweep(env: dict[str, str], device: str, members: int, steps: int) -> float:
    queue = "gpu" if device == "cuda" else "cpu"
    start = time.perf_counter()
    done = kiln(env, "submit", "sweep", "--model", "linreg", "--data", str(rugged_path()),
                "--formula", FORMULA, "--bootstrap", str(members), "--steps", str(steps),
                "--lr", "0.005", "--num-samples", "100", "--seed", "0", "--device", device,
                "--queue", queue, "--wait", "--json", timeout=1800)  # fmt: skip
    wall = time.perf_counter() - start
    assert done["status"] == "succeeded", str(done)[:500]
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16384)
    parser.add_argument("--cpu-members", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--sweep-steps", type=int, default=200, help="steps of each member")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 members, 200 steps, 2 epochs")
    args = parser.parse_args()
    if args.quick:
        args.members, args.cpu_members, args.steps, args.epochs = 64, 16, 200, 2
        args.sweep_steps = 100
    import torch

    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, cuda: "
          f"{torch.cuda.get_device_name(0) if cuda else 'none'}", flush=True)  # fmt: skip
    home = Path(tempfile.mkdtemp(prefix="kiln-gpu-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update(KILN_HOME=str(home), KILN_POLL_INTERVAL_S="0.2", KILN_MAX_SWEEP_MEMBERS="100000",
               KILN_SWEEP_MEMORY_MB="40000", PYTHONUNBUFFERED="1")  # fmt: skip
    workers = [start_worker(env, "cpu", "c1", home / "c1.log")]
    if cuda:
        workers.append(start_worker(env, "gpu", "g1", home / "g1.log"))
    try:
        fit(env, "cpu", 50)  # warm-up: the worker's first job imports and compiles
        rows = [("rugged fit, cpu queue", *fit(env, "cpu", args.steps))]
        if cuda:
            fit(env, "cuda", 50)
            rows.append(("rugged fit, gpu queue (--device cuda)", *fit(env, "cuda", args.steps)))
        print(f"\nrugged fit, {args.steps} steps, Trace_ELBO, AutoNormal (submit -> succeeded"
              " from a shell; the job's own run time):")  # fmt: skip
        for name, wall, run in rows:
            print(f"  {name:<40} {wall:8.2f} s   job {run:8.2f} s", flush=True)
        cpu_wall = sweep(env, "cpu", args.cpu_members, args.sweep_steps)
        print(f"\nsweep of bootstrap fits, {args.sweep_steps} steps each, through the service:")
        per = cpu_wall / args.cpu_members * 1000
        print(f"  cpu worker, {args.cpu_members} members     {cpu_wall:8.2f} s"
              f"   ({per:.1f} ms per member)", flush=True)  # fmt: skip
        if cuda:
            gpu_wall = sweep(env, "cuda", args.members, args.sweep_steps)
            print(f"  gpu worker, {args.members} members   {gpu_wall:8.2f} s"
                  f"   ({gpu_wall / args.members * 1000:.2f} ms per member)")  # fmt: skip
            per_cpu, per_gpu = cpu_wall / args.cpu_members, gpu_wall / args.members
            print(f"  per member, cpu / gpu: {per_cpu / per_gpu:.1f}x", flush=True)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        subprocess.run([*KILN, "broker", "stop"], env=env, capture_output=True, cwd=ROOT)
    print(flush=True)
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_library.py"), "--epochs",
                    str(args.epochs)], cwd=ROOT, check=True)  # fmt: skip


if __name__ == "__main__":
    main()

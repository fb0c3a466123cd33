"""How long `jobs list --where` takes over 100,000 jobs on PostgreSQL (target: < 200 ms each).

    .venv/bin/python bench/bench_search.py [--jobs 100000] [--url postgresql://postgres@127.0.0.1:5432/test]

Creates a scratch database next to `--url`'s (dropped at the end), migrates it, bulk-inserts
jobs with realistic spec and info JSON, tags on every job, posterior summaries for a third,
metrics for a fifth and a few sweeps, then times representative queries (best of 5, one page
of 20) and prints each with whether its plan uses an index.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import insert

from db.migrate import upgrade_to_head
from db.models import Job, JobTag, Metric, Param, Sweep
from db.search import compile_search, search_jobs, searchable_columns
from db.session import make_engine, make_sessionmaker
from kiln.query import parse_order, parse_query

QUERIES = [
    ("status = 'succeeded' AND final_loss < 1.5", None),
    ("tag.study = 's7' OR params.rugged.mean < -0.29", None),
    ("method = 'nuts' AND params.theta.r_hat > 1.05", None),
    ("spec.lr > 0.05 AND model = 'linreg'", None),
    ("metrics.test_accuracy > 0.95", None),
    ("name LIKE 'run-12%'", None),
    ("created >= '2026-03-01' AND NOT tag.stage = 'final'", "final_loss asc"),
    ("guide IN ('AutoDelta', 'AutoLowRankMultivariateNormal') AND owner = 'u3'", "created"),
]


def fill(url: str, n: int) -> None:
    rng = random.Random(0)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    engine = make_engine(url)
    sweeps = [{"id": f"sweep{k:011d}", "model": "linreg", "spec": {}, "members": n // 100,
               "batches": 0, "created_at": t0, "info": {}} for k in range(5)]  # fmt: skip
    jobs, tags, params, metrics = [], [], [], []
    for i in range(n):
        mcmc = i % 10 == 0
        spec = ({"kind": "user_mcmc_fit", "model": "m.py:model", "method": "nuts", "chains": 4,
                 "warmup": 500, "samples": 500, "seed": i} if mcmc else
                {"kind": "linreg_fit", "model": "linreg", "formula": "y ~ x * z",
                 "guide": rng.choice(["AutoNormal", "AutoDelta", "AutoLowRankMultivariateNormal"]),
                 "lr": rng.choice([0.005, 0.01, 0.02, 0.1]), "steps": 1000, "seed": i,
                 "device": "cpu", "priority": 5, "priors": {}})  # fmt: skip
        info = {"data": {"rows": 170, "columns": ["y", "x", "z"]}, "device": "cpu",
                "elbo": "Trace_ELBO", "fit_seconds": rng.random() * 30}  # fmt: skip
        if not mcmc:
            info["final_loss"] = rng.random() * 5
        job_id = f"{i:016x}"
        jobs.append({
            "id": job_id, "kind": "fit", "status": rng.choice(["succeeded"] * 8 + ["failed"]),
            "spec": spec, "model": spec["model"], "queue": "cpu", "priority": 5, "step": 1000,
            "total_steps": 1000, "created_at": t0 + timedelta(seconds=60 * i), "attempts": 1,
            "max_attempts": 3, "cancel_requested": False, "info": info,
            "owner": f"u{i % 10}", "name": f"run-{i}",
            "sweep_id": sweeps[i % 5]["id"] if i % 7 == 0 else None,
            **searchable_columns(spec, info),
        })  # fmt: skip
        tags.append({"job_id": job_id, "key": "study", "value": f"s{i % 50}"})
        if i % 4 == 0:
            tags.append({"job_id": job_id, "key": "stage", "value": "final"})
        if i % 3 == 0:
            site, stats = ("theta", {"r_hat": 1 + rng.random() * 0.1}) if mcmc else (
                "rugged", {})  # fmt: skip
            params.append({"job_id": job_id, "site": site, "position": 0, "shape": [],
                           "mean": rng.gauss(-0.2, 0.05), "sd": 0.1, "stats": b"",
                           "r_hat": stats.get("r_hat")})  # fmt: skip
        if i % 5 == 0:
            metrics += [{"job_id": job_id, "name": "test_accuracy", "step": s, "epoch": 0,
                         "value": rng.random()} for s in (1, 2)]  # fmt: skip
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(insert(Sweep), sweeps)
        for table, rows in ((Job, jobs), (JobTag, tags), (Param, params), (Metric, metrics)):
            for k in range(0, len(rows), 5000):
                connection.execute(insert(table), rows[k : k + 5000])
        connection.exec_driver_sql("ANALYZE")
    print(f"filled {n} jobs, {len(tags)} tags, {len(params)} params, {len(metrics)} metric rows"
          f" in {time.perf_counter() - started:.1f} s")  # fmt: skip
    engine.dispose()


def bench(url: str) -> None:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    print(f"{'best of 5':>10}  {'found':>5}  index  query")
    for where, order in QUERIES:
        query, keys = parse_query(where), parse_order(order) if order else ()
        times, found = [], 0
        with sessions() as session:
            for _ in range(5):
                started = time.perf_counter()
                found = len(search_jobs(session, query, keys, limit=20))
                times.append(time.perf_counter() - started)
            select = compile_search("postgresql", query, keys).limit(20)
            compiled = select.compile(
                dialect=engine.dialect, compile_kwargs={"literal_binds": True}
            )
            plan = session.connection().exec_driver_sql("EXPLAIN " + str(compiled)).all()
        uses = "yes" if any("Index" in row[0] for row in plan) else "no"
        shown = where + (f"  ORDER BY {order}" if order else "")
        print(f"{min(times) * 1000:8.1f} ms  {found:>5}  {uses:>5}  {shown}")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    name = f"kiln_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = args.url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    try:
        upgrade_to_head(url)
        fill(url, args.jobs)
        bench(url)
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

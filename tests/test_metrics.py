"""The Prometheus endpoint: exact values scraped over HTTP from SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict
from urllib.request import urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from db.jobs import create_job
from db.models import Job, JobStatus, utcnow
from db.session import make_engine, make_sessionmaker
from db.stats import finished_durations, running_step_rates, total_steps
from db.workers import register_worker, stop_worker
from kiln.metrics import MetricsServer, start_metrics_server
from kiln.settings import normalise_db_url

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(normalise_db_url(db_url))
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def serve() -> Iterator[Callable[..., MetricsServer]]:
    """Factory: serve(sessions, **kwargs) -> a MetricsServer on a free port, closed afterwards."""
    started: list[MetricsServer] = []

    def start(sessions: sessionmaker[Session], **kwargs: Any) -> MetricsServer:
        server = start_metrics_server(sessions, port=0, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def scrape(server: MetricsServer) -> Samples:
    """GET /metrics (it must answer 200); {sample name: {sorted label pairs: value}}."""
    with urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def add_job(
    session: Session,
    job_id: str,
    queue: str,
    status: JobStatus,
    *,
    kind: str = "fit",
    step: int = 0,
    created_at: datetime | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> None:
    job = create_job(session, status=status, id=job_id, kind=kind, spec={}, model="linreg",
                     queue=queue, total_steps=10_000)  # fmt: skip
    job.step = step
    job.created_at = created_at or utcnow()
    job.started_at, job.finished_at = started_at, finished_at


class Ran(TypedDict):
    started_at: datetime
    finished_at: datetime


def make_fleet(sessions: sessionmaker[Session]) -> None:
    """Queues cpu and gpu with jobs of known times; queue `old` is served only by a dead worker."""
    now = utcnow().replace(microsecond=0)
    t0 = now - timedelta(hours=5)

    def ended(seconds: float) -> Ran:
        return {"started_at": t0, "finished_at": t0 + timedelta(seconds=seconds)}

    with sessions() as session:
        add_job(
            session, "queued01", "cpu", JobStatus.QUEUED, created_at=now - timedelta(seconds=300)
        )
        add_job(
            session, "queued02", "cpu", JobStatus.QUEUED, created_at=now - timedelta(seconds=10)
        )
        add_job(session, "run00001", "cpu", JobStatus.RUNNING, step=500,
                started_at=now - timedelta(seconds=100))  # fmt: skip
        for i, seconds in enumerate([0.25, 4, 4, 90]):
            add_job(session, f"done000{i}", "cpu", JobStatus.SUCCEEDED, step=100, **ended(seconds))
        add_job(session, "fail0001", "cpu", JobStatus.FAILED, step=7, **ended(7200))
        # cancelled while queued: it never ran, so it has no duration
        add_job(session, "canc0001", "cpu", JobStatus.CANCELLED, finished_at=now)
        add_job(session, "wait0001", "cpu", JobStatus.WAITING, kind="predict")
        add_job(session, "run00002", "gpu", JobStatus.RUNNING, step=1000,
                started_at=now - timedelta(seconds=50))  # fmt: skip
        add_job(session, "run00003", "gpu", JobStatus.RUNNING, step=2000,
                started_at=now - timedelta(seconds=200))  # fmt: skip
        add_job(session, "pred0001", "gpu", JobStatus.SUCCEEDED, kind="predict", step=1,
                **ended(10_000))  # fmt: skip
        session.commit()
        register_worker(session, name="old", host="h", pid=1, queues=["gpu", "old"], device="cuda")
        stop_worker(session, "old")
        register_worker(session, name="w1", host="h", pid=2, queues=["cpu", "gpu"], device="cpu")


STEPS = 500 + 4 * 100 + 7 + 1000 + 2000 + 1
ZERO = dict.fromkeys(JobStatus, 0)


def test_a_scrape_reports_jobs_queues_workers_and_steps_exactly(sessions, serve) -> None:
    make_fleet(sessions)
    got = scrape(serve(sessions))

    assert got["kiln_up"] == {(): 1.0}
    expected_jobs = {
        "cpu": {**ZERO, JobStatus.WAITING: 1, JobStatus.QUEUED: 2, JobStatus.RUNNING: 1,
                JobStatus.SUCCEEDED: 4, JobStatus.FAILED: 1, JobStatus.CANCELLED: 1},
        "gpu": {**ZERO, JobStatus.RUNNING: 2, JobStatus.SUCCEEDED: 1},
        "old": ZERO,
    }  # fmt: skip
    assert got["kiln_jobs"] == {
        (("queue", q), ("status", s.value)): float(n)
        for q, by_status in expected_jobs.items()
        for s, n in by_status.items()
    }
    assert got["kiln_queue_depth"] == {(("queue", "cpu"),): 2, (("queue", "gpu"),): 0,
                                       (("queue", "old"),): 0}  # fmt: skip
    assert got["kiln_workers_alive"] == {(("queue", "cpu"),): 1, (("queue", "gpu"),): 1,
                                         (("queue", "old"),): 0}  # fmt: skip
    oldest = got["kiln_oldest_queued_age_seconds"]
    assert oldest[(("queue", "cpu"),)] == pytest.approx(300, abs=5)
    assert oldest[(("queue", "gpu"),)] == 0 and oldest[(("queue", "old"),)] == 0
    assert got["kiln_steps_total"] == {(): float(STEPS)}
    rate = got["kiln_step_rate"]
    assert rate[(("queue", "cpu"),)] == pytest.approx(500 / 100, rel=0.03)
    assert rate[(("queue", "gpu"),)] == pytest.approx(1000 / 50 + 2000 / 200, rel=0.03)
    assert rate[(("queue", "old"),)] == 0
    assert "kiln_broker_messages" not in got


def test_job_durations_fill_cumulative_buckets(sessions, serve) -> None:
    make_fleet(sessions)
    got = scrape(serve(sessions))

    def series(kind: str, status: str) -> dict[float, float]:
        buckets = got["kiln_job_duration_seconds_bucket"]
        return {float(dict(k)["le"]): v for k, v in buckets.items()
                if dict(k)["kind"] == kind and dict(k)["status"] == status}  # fmt: skip

    inf = float("inf")
    below = dict.fromkeys([0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600], 0.0)
    succeeded = [1, 1, 1, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4]  # 0.25 s, 4 s, 4 s, 90 s
    assert series("fit", "succeeded") == dict(zip([*below, 7200, inf], succeeded, strict=True))
    # le is "less than or equal": a run of exactly 7200 s falls in the 7200 bucket
    assert series("fit", "failed") == {**below, 7200: 1, inf: 1}
    assert series("predict", "succeeded") == {**below, 7200: 0, inf: 1}
    assert series("fit", "cancelled") == {}  # never started, so not timed

    def labels(kind: str, status: str) -> tuple[tuple[str, str], ...]:
        return (("kind", kind), ("status", status))

    assert got["kiln_job_duration_seconds_sum"] == {
        labels("fit", "succeeded"): 98.25,
        labels("fit", "failed"): 7200.0,
        labels("predict", "succeeded"): 10_000.0,
    }
    assert got["kiln_job_duration_seconds_count"] == {
        labels("fit", "succeeded"): 4.0,
        labels("fit", "failed"): 1.0,
        labels("predict", "succeeded"): 1.0,
    }


def test_broker_depths_pass_through(sessions, serve) -> None:
    make_fleet(sessions)
    got = scrape(serve(sessions, broker_depths=lambda: {"cpu": 7, "gpu": 0}))
    assert got["kiln_broker_messages"] == {(("queue", "cpu"),): 7.0, (("queue", "gpu"),): 0.0}


def test_a_raising_broker_skips_its_metric_but_not_the_scrape(sessions, serve, caplog) -> None:
    def broker_down() -> dict[str, int]:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    make_fleet(sessions)
    with caplog.at_level(logging.WARNING, logger="kiln.metrics"):
        got = scrape(serve(sessions, broker_depths=broker_down))
    assert "kiln_broker_messages" not in got
    assert got["kiln_up"] == {(): 1.0}
    assert got["kiln_queue_depth"][(("queue", "cpu"),)] == 2
    assert any("Connection refused" in r.getMessage() for r in caplog.records)


def test_an_empty_fleet_reports_up_and_zero_steps(sessions, serve) -> None:
    got = scrape(serve(sessions))
    assert got["kiln_up"] == {(): 1.0}
    assert got["kiln_steps_total"] == {(): 0.0}
    assert "kiln_jobs" not in got and "kiln_job_duration_seconds_bucket" not in got


def test_the_steps_counter_never_goes_down(sessions, serve) -> None:
    make_fleet(sessions)
    server = serve(sessions)
    assert scrape(server)["kiln_steps_total"] == {(): float(STEPS)}
    with sessions() as session:  # a retried job resumed from an earlier checkpoint
        session.execute(update(Job).where(Job.id == "run00003").values(step=1500))
        session.commit()
        assert total_steps(session) == STEPS - 500
    assert scrape(server)["kiln_steps_total"] == {(): float(STEPS)}
    with sessions() as session:
        session.execute(update(Job).where(Job.id == "run00003").values(step=2600))
        session.commit()
    assert scrape(server)["kiln_steps_total"] == {(): float(STEPS + 600)}


def test_a_database_error_gives_up_zero_and_the_server_keeps_serving(
    tmp_path: Path, serve, caplog
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'no-schema.db'}")  # no tables: every query fails
    try:
        server = serve(make_sessionmaker(engine), broker_depths=lambda: {"cpu": 3})
        with caplog.at_level(logging.WARNING, logger="kiln.metrics"):
            for _ in range(2):
                got = scrape(server)
                assert got == {"kiln_up": {(): 0.0},
                               "kiln_broker_messages": {(("queue", "cpu"),): 3.0}}  # fmt: skip
        assert any("no such table" in r.getMessage() for r in caplog.records)
    finally:
        engine.dispose()


def test_stats_queries_read_naive_and_aware_times_alike(sessions) -> None:
    make_fleet(sessions)
    with sessions() as session:
        durations = sorted(finished_durations(session))
        assert durations == [
            ("fit", "failed", 7200.0),
            *[("fit", "succeeded", seconds) for seconds in (0.25, 4.0, 4.0, 90.0)],
            ("predict", "succeeded", 10_000.0),
        ]
        now = session.get(Job, "run00001").started_at + timedelta(seconds=250)
        if now.tzinfo is None:  # SQLite: naive, UTC
            now = now.replace(tzinfo=utcnow().tzinfo)
        rates = {job_id: (queue, rate) for job_id, queue, rate in running_step_rates(session, now)}
        assert rates == {"run00001": ("cpu", 2.0), "run00002": ("gpu", pytest.approx(1000 / 200)),
                         "run00003": ("gpu", pytest.approx(2000 / 350))}  # fmt: skip
        recent = utcnow() - timedelta(hours=1)
        assert finished_durations(session, since=recent) == []  # all ended over 2 h ago


@pytest.mark.parametrize("module", ["db.stats", "kiln.metrics"])
def test_metrics_modules_import_no_torch_celery_or_inference(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "print(','.join(m for m in ['torch', 'pyro', 'celery', 'inference', 'worker']"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

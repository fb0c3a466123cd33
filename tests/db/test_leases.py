"""Leases, the reaper's database half, resume bookkeeping and routing, on each database."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.claims import attempts_of, claim_job, record_progress, renew_lease
from db.jobs import create_job, get_job
from db.models import Checkpoint, Job, JobStatus, Loss, utcnow
from db.reaping import mark_resent, queued_since, reap_expired
from db.workers import idle_gpu_workers, register_worker
from kiln.specs import parse_spec, parse_user_spec
from scheduler.reaper import Reaper
from scheduler.routing import route
from tests.conftest import Stack
from tests.params import EACH_DATABASE

pytestmark = EACH_DATABASE


def add_job(
    sessions: sessionmaker[Session], job_id: str, max_attempts: int = 3, **fields: Any
) -> None:
    with sessions() as session:
        create_job(session, id=job_id, kind="fit", spec={}, model="linreg", queue="cpu",
                   total_steps=100, max_attempts=max_attempts, **fields)  # fmt: skip
        session.commit()


def claim(sessions: sessionmaker[Session], job_id: str, worker: str = "w1") -> int | None:
    with sessions() as session:
        return claim_job(session, job_id, worker=worker, host="h", pid=1, device="cpu",
                         lease_s=60)  # fmt: skip


def expire(sessions: sessionmaker[Session], job_id: str) -> None:
    with sessions() as session:
        session.execute(update(Job).where(Job.id == job_id)
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))  # fmt: skip
        session.commit()


def test_an_expired_lease_is_requeued_and_its_attempt_closed_as_lost(stack) -> None:
    sessions = stack.sessions()
    add_job(sessions, "job00001")
    add_job(sessions, "job00002")
    assert claim(sessions, "job00001") == 1 and claim(sessions, "job00002") == 1
    expire(sessions, "job00001")
    with sessions() as session:
        reaped = reap_expired(session)
    assert [r.id for r in reaped.requeued] == ["job00001"] and reaped.failed == []
    with sessions() as session:
        job = get_job(session, "job00001")
        assert (job.status, job.worker, job.lease_expires_at) == ("queued", None, None)
        assert job.error is not None
        assert "w1 stopped renewing its lease" in job.error
        assert [(a.outcome, a.ended_at is not None) for a in attempts_of(session, job.id)] == [
            ("lost", True)
        ]
        assert get_job(session, "job00002").status == "running"  # its lease is fresh
        assert reap_expired(session).requeued == []  # a second reaper finds nothing


def test_a_job_that_keeps_losing_its_worker_fails_after_its_attempts(stack) -> None:
    sessions = stack.sessions()
    add_job(sessions, "job00001", max_attempts=2)
    with sessions() as session:
        create_job(session, status=JobStatus.WAITING, id="pred0001", kind="predict", spec={},
                   model="linreg", queue="cpu", total_steps=1, depends_on="job00001")  # fmt: skip
        session.commit()
    for attempt in (1, 2):
        assert claim(sessions, "job00001", f"w{attempt}") == attempt
        expire(sessions, "job00001")
        with sessions() as session:
            reaped = reap_expired(session)
    assert reaped.failed == ["job00001"] and reaped.requeued == []
    with sessions() as session:
        job = get_job(session, "job00001")
        assert job.status == "failed" and job.error is not None
        assert job.error.startswith("gave up after 2 attempts")
        assert [(a.worker, a.outcome) for a in attempts_of(session, job.id)] == [
            ("w1", "lost"), ("w2", "lost")
        ]  # fmt: skip
        assert get_job(session, "pred0001").status == "failed"
    assert claim(sessions, "job00001", "w3") is None


def test_a_lease_renewed_by_its_worker_only(stack) -> None:
    sessions = stack.sessions()
    add_job(sessions, "job00001")
    claim(sessions, "job00001")
    with sessions() as session:
        assert renew_lease(session, "job00001", worker="w1", lease_s=60)
        assert not renew_lease(session, "job00001", worker="w2", lease_s=60)


def test_a_resumed_attempt_replays_from_the_checkpoint_without_duplicate_losses(stack) -> None:
    sessions = stack.sessions()
    add_job(sessions, "job00001")
    claim(sessions, "job00001")
    with sessions() as session:
        record_progress(session, "job00001", worker="w1", losses=[(s, 1.0) for s in range(50)],
                        lease_s=60, checkpoint=(50, "fmt", b"state50"))  # fmt: skip
        record_progress(session, "job00001", worker="w1",
                        losses=[(s, 1.0) for s in range(50, 70)], lease_s=60)  # fmt: skip
    expire(sessions, "job00001")
    assert claim(sessions, "job00001", "w2") == 2  # claimed straight from the expired lease
    with sessions() as session:
        steps = session.scalars(select(Loss.step).where(Loss.job_id == "job00001")).all()
        assert sorted(steps) == list(range(50))
        assert get_job(session, "job00001").step == 50
        saved = session.get(Checkpoint, "job00001")
        assert (saved.step, saved.content) == (50, b"state50")
        assert [a.outcome for a in attempts_of(session, "job00001")] == ["lost", None]
        # the replay writes steps 50.. again without a key clash
        record_progress(session, "job00001", worker="w2", losses=[(s, 2.0) for s in range(50, 100)],
                        lease_s=60)  # fmt: skip
        assert session.scalar(select(Loss.loss).where(Loss.step == 60)) == 2.0


def test_queued_jobs_missing_from_the_broker_are_resent_once_stale(stack) -> None:
    sessions = stack.sessions()
    for job_id in ("job00001", "job00002", "job00003"):
        add_job(sessions, job_id)
    with sessions() as session:
        session.execute(update(Job).where(Job.id != "job00003")
                        .values(queued_at=utcnow() - timedelta(seconds=60)))  # fmt: skip
        session.commit()
        assert {j.id for j in queued_since(session, 30)} == {"job00001", "job00002"}
    sent = []
    reaper = Reaper(sessions, lambda *m: sent.append(m), lambda queues: {"job00002"},
                    resend_after_s=30)  # fmt: skip
    report = reaper.run_once()
    assert report.resent == ["job00001"] and [m[0] for m in sent] == ["job00001"]
    assert reaper.run_once().resent == []  # its clock restarted: not sent again at once

    def broker_down(queues: Iterable[str]) -> set[str]:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")

    with sessions() as session:
        mark_resent(session, [])
        session.execute(update(Job).values(queued_at=utcnow() - timedelta(seconds=60)))
        session.commit()
    report = Reaper(sessions, lambda *m: None, broker_down, resend_after_s=30).run_once()
    assert report.resent == [] and "broker not readable" in report.errors[0]


def test_device_auto_goes_to_an_idle_gpu_worker_only(stack) -> None:
    sessions = stack.sessions()
    spec = parse_spec({"model": "linreg", "formula": "y ~ x", "device": "auto"})
    with sessions() as session:
        assert idle_gpu_workers(session, 20) == 0
        assert route(spec, lambda: idle_gpu_workers(session, 20) > 0) == "cpu"
        register_worker(session, name="g1", host="h", pid=1, queues=["gpu"], device="cuda")
        register_worker(session, name="c1", host="h", pid=2, queues=["cpu"], device="cpu")
        assert route(spec, lambda: idle_gpu_workers(session, 20) > 0) == "gpu"
        mcmc = parse_user_spec({"model": "m.py", "model_file": "m.py", "method": "nuts",
                                "device": "auto"})  # fmt: skip
        # Kiln's sampler keeps its chains on the CPU: auto never sends MCMC to a GPU.
        assert route(mcmc, lambda: idle_gpu_workers(session, 20) > 0) == "cpu.user"
    add_job(sessions, "job00001")
    claim(sessions, "job00001", "g1")
    with sessions() as session:
        assert idle_gpu_workers(session, 20) == 0  # busy: auto goes to cpu
    assert route(parse_spec({"model": "linreg", "formula": "y ~ x", "device": "cuda"})) == "gpu"
    assert route(parse_spec({"model": "linreg", "formula": "y ~ x"})) == "cpu"


@pytest.mark.parametrize("failures", [2])
def test_the_sink_keeps_steps_while_the_database_does_not_answer(
    stack: Stack, failures: int
) -> None:
    from sqlalchemy.exc import OperationalError

    from inference.events import Finished, Started, Step
    from kiln.jobinfo import SviInfo
    from worker.sink import Sink

    sessions = stack.sessions()
    add_job(sessions, "job00001")
    claim(sessions, "job00001")
    calls = {"n": 0}

    def flaky() -> Session:
        calls["n"] += 1
        if 2 <= calls["n"] <= 1 + failures:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return sessions()

    sink = Sink(flaky, "job00001", worker="w1", lease_s=60, flush_every_s=0, info=SviInfo(),
                db_retry_s=30)  # fmt: skip
    sink.add(Started(elbo="Trace_ELBO", device="cpu", total=10))
    for step in range(10):
        sink.add(Step(step=step, total=10, loss=float(step)))
    sink.add(Finished(steps=10, final_loss=9.0))
    with sessions() as session:
        assert session.scalars(select(Loss.step).where(Loss.job_id == "job00001")).all() == list(
            range(10)
        )
        assert get_job(session, "job00001").step == 10

    def down() -> Session:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    from kiln.errors import InfraError

    gone = Sink(down, "job00001", worker="w1", lease_s=60, flush_every_s=0, info=SviInfo(),
                db_retry_s=0.3)  # fmt: skip
    with pytest.raises(InfraError, match="database unreachable"):
        gone.add(Finished(steps=10, final_loss=9.0))


def test_metrics_are_stored_with_progress_and_trimmed_to_the_checkpoint_on_resume(stack) -> None:
    from db.results import get_metrics

    sessions = stack.sessions()
    add_job(sessions, "job00009")
    assert claim(sessions, "job00009") == 1
    with sessions() as session:
        record_progress(session, "job00009", worker="w1", lease_s=60,
                        losses=[(s, 1.0) for s in range(10)],
                        metrics=[("train_elbo", 5, 1, 2.5), ("test_elbo", 5, 1, 2.7),
                                 ("train_elbo", 10, 2, 2.0)],
                        checkpoint=(5, "fmt", b"state"))  # fmt: skip
    with sessions() as session:
        assert get_metrics(session, "job00009", "train_elbo") == [
            ("train_elbo", 5, 1, 2.5), ("train_elbo", 10, 2, 2.0)
        ]  # fmt: skip
    expire(sessions, "job00009")
    assert claim(sessions, "job00009", worker="w2") == 2
    with sessions() as session:
        # Resuming at step 5 replays epoch 2: its metric goes, epoch 1's (written with the
        # checkpoint) stays.
        assert get_metrics(session, "job00009") == [
            ("test_elbo", 5, 1, 2.7), ("train_elbo", 5, 1, 2.5)
        ]  # fmt: skip

"""A flush whose commit went through but whose reply was lost is sent again: the retry neither
fails on the primary keys of losses and metrics nor stores a row twice, on each database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Insert

from db.claims import claim_job
from db.jobs import create_job
from db.models import Attempt, Checkpoint, Job, Loss, Metric
from db.results import add_loss_rows, get_losses, get_metrics
from inference.events import Checkpoint as CheckpointEvent
from inference.events import Finished, Step
from inference.events import Metric as MetricEvent
from kiln.jobinfo import SviInfo
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, offline_client
from tests.params import EACH_DATABASE, EMBEDDED_AND_FLEET


class LostReplies:
    """The first `times` commits of sessions that inserted loss rows go through, and then
    raise OperationalError, as when the connection drops before the server's reply."""

    def __init__(self, times: int) -> None:
        self.left = times
        self.fired = 0

    def sessions(self, engine: Engine) -> sessionmaker[Session]:
        faults = self

        class ReplyLosingSession(Session):
            wrote_losses = False

            def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
                if isinstance(statement, Insert) and statement.table.name == "losses":
                    self.wrote_losses = True
                return super().execute(statement, *args, **kwargs)

            def commit(self) -> None:
                super().commit()
                if self.wrote_losses and faults.left > 0:
                    faults.left -= 1
                    faults.fired += 1
                    raise OperationalError(
                        "COMMIT", None, ConnectionError("server closed the connection")
                    )

        return sessionmaker(engine, class_=ReplyLosingSession, expire_on_commit=False)


def engine_of(stack: Stack) -> Engine:
    stack.sessions()  # makes the stack's engine
    assert stack.engine is not None
    return stack.engine


def running_job(sessions: sessionmaker[Session], job_id: str, worker: str = "w1") -> None:
    with sessions() as session:
        create_job(session, id=job_id, kind="fit", spec={}, model="linreg", queue="cpu",
                   total_steps=200)  # fmt: skip
        session.commit()
        assert claim_job(session, job_id, worker=worker, host="h", pid=1, device="cpu",
                         lease_s=60) == 1  # fmt: skip


@EACH_DATABASE
def test_a_flush_whose_commit_reply_is_lost_is_retried_without_doubling_a_row(stack) -> None:
    from worker.sink import Sink

    sessions = stack.sessions()
    running_job(sessions, "job00001")
    faults = LostReplies(times=2)
    sink = Sink(faults.sessions(engine_of(stack)), "job00001", worker="w1", lease_s=60,
                flush_every_s=3600, info=SviInfo(), db_retry_s=30)  # fmt: skip
    for step in range(100):
        sink.add(Step(step=step, total=200, loss=float(step)))
    sink.add(MetricEvent("train_elbo", 100, 1.5, 1))
    sink.add(CheckpointEvent(100, b"state at 100"))  # flushes: stored, but the reply is lost
    assert faults.fired == 1 and len(sink.pending) == 100  # kept for the next flush
    for step in range(100, 200):
        sink.add(Step(step=step, total=200, loss=float(step)))
    sink.add(MetricEvent("train_elbo", 200, 1.25, 2))
    sink.add(Finished(steps=200, final_loss=199.0))  # must: lost once more, then retried
    assert faults.fired == 2 and sink.pending == [] and sink.metrics == []
    with sessions() as session:
        assert get_losses(session, "job00001") == [(s, float(s)) for s in range(200)]
        assert session.scalar(select(func.count()).select_from(Loss)) == 200
        assert get_metrics(session, "job00001") == [("train_elbo", 100, 1, 1.5),
                                                    ("train_elbo", 200, 2, 1.25)]  # fmt: skip
        assert session.scalar(select(func.count()).select_from(Metric)) == 2
        saved = session.get(Checkpoint, "job00001")
        assert saved is not None and (saved.step, saved.content) == (100, b"state at 100")
        job = session.get(Job, "job00001")
        assert job is not None and (job.step, job.last_loss, job.status) == (200, 199.0, "running")


@EACH_DATABASE
def test_bulk_loss_rows_written_again_are_skipped_and_the_transaction_goes_on(stack) -> None:
    """add_loss_rows (COPY on PostgreSQL) given rows already stored: those are skipped, the
    new ones stored, and what the transaction wrote before them is kept."""
    sessions = stack.sessions()
    running_job(sessions, "job00001")
    with sessions() as session:
        add_loss_rows(session, [("job00001", s, 1.0) for s in range(100)])
        session.commit()
    with sessions() as session:
        create_job(session, id="job00002", kind="fit", spec={}, model="linreg", queue="cpu",
                   total_steps=10)  # fmt: skip
        add_loss_rows(session, [("job00001", s, 2.0) for s in range(50, 150)])
        add_loss_rows(session, [("job00002", s, 3.0) for s in range(10)])
        session.commit()
    with sessions() as session:
        assert get_losses(session, "job00001") == [(s, 1.0 if s < 100 else 2.0)
                                                   for s in range(150)]  # fmt: skip
        assert get_losses(session, "job00002") == [(s, 3.0) for s in range(10)]


@EMBEDDED_AND_FLEET
def test_a_fit_whose_flush_replies_are_lost_ends_with_exactly_its_steps(stack) -> None:
    """A whole fit through execute_job, three of its flushes' replies lost: one attempt, which
    succeeds, and one loss row per step."""
    from worker.run import execute_job
    from worker.runtime import Runtime

    steps = 400
    kiln = offline_client(stack)
    job_id = kiln.submit_fit(RUGGED, RUGGED_FORMULA, steps=steps, seed=3, elbo="Trace_ELBO")
    faults = LostReplies(times=3)
    runtime = Runtime(stack.settings(), faults.sessions(engine_of(stack)), "test-host", "w1",
                      "cpu")  # fmt: skip
    assert execute_job(runtime, job_id).status == "succeeded"
    assert faults.fired == 3
    with stack.sessions()() as session:
        assert [s for s, _ in get_losses(session, job_id)] == list(range(steps))
        outcomes = session.scalars(select(Attempt.outcome).where(Attempt.job_id == job_id))
        assert list(outcomes) == ["succeeded"]
        job = session.get(Job, job_id)
        assert job is not None and job.step == steps

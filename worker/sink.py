"""Sink: consumes inference events, writes loss rows and checkpoints in batches, renews the
lease, checks cancel, and rides out a database that briefly does not answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.claims import record_progress
from inference.checkpoint import format_of
from inference.events import (
    BatchStep,
    ChainProgress,
    Checkpoint,
    Event,
    Finished,
    McmcFinished,
    McmcStarted,
    Metric,
    Started,
    Step,
)
from kiln.errors import Cancelled, InfraError
from kiln.jobinfo import BatchInfo, ChainState, JobInfo, McmcInfo, SviInfo
from worker.context import JobContext
from worker.joblog import JobLog, current_log

log = logging.getLogger(__name__)

# Called in each flush's transaction before it commits (a batch moves its members' steps).
OnFlush = Callable[[Session, int | None], None]


class Sink:
    """One per running job. Flushes every `flush_every_s` seconds, at each checkpoint and at
    the end; a checkpoint is written in the same transaction as the losses before it. The
    job's typed info (ctx.info) is updated from the events and written with the flushes."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        job_id: str,
        *,
        worker: str,
        lease_s: float,
        flush_every_s: float,
        info: JobInfo,
        db_retry_s: float = 30.0,
        on_flush: OnFlush | None = None,
        joblog: JobLog | None = None,
    ) -> None:
        self.sessions = sessions
        self.joblog = joblog  # the job's own log: its new lines go with each flush
        self.job_id = job_id
        self.worker = worker
        self.lease_s = lease_s
        self.info = info
        self.on_flush = on_flush
        self.flush_every_s = flush_every_s
        self.db_retry_s = db_retry_s
        self.pending: list[tuple[int, float]] = []
        self.metrics: list[tuple[str, int, int, float]] = []
        self.checkpoint: tuple[int, str, bytes] | None = None
        self.last_flush = self.last_ok = time.monotonic()
        self.chain_done: dict[int, int] = {}  # MCMC: iterations done by chain
        self.step: int | None = None

    @classmethod
    def for_job(cls, ctx: JobContext[Any], on_flush: OnFlush | None = None) -> Sink:
        """The sink of a claimed job, with the worker's settings."""
        s = ctx.settings
        return cls(
            ctx.sessions, ctx.job_id, worker=ctx.worker, lease_s=s.lease_s,
            flush_every_s=s.flush_every_s, info=ctx.info, db_retry_s=s.db_retry_s,
            on_flush=on_flush, joblog=current_log(),
        )  # fmt: skip

    def _due(self) -> bool:
        return time.monotonic() - self.last_flush >= self.flush_every_s

    def add(self, event: Event) -> None:
        info = self.info
        if isinstance(event, Step):
            self.pending.append((event.step, event.loss))
            if self._due():
                self.flush()
        elif isinstance(event, Metric):
            self.metrics.append((event.name, event.step, event.epoch, event.value))
            info.metrics = {**info.metrics, event.name: event.value}  # the latest
        elif isinstance(event, Checkpoint):
            # a single fit's or a batch's: the bytes name their format
            self.checkpoint = (event.step, format_of(event.content), event.content)
            log.info("job %s: checkpoint at step %d", self.job_id, event.step)
            self.flush()
        elif isinstance(event, Started):
            assert isinstance(info, SviInfo)
            info.elbo, info.device = event.elbo, event.device
            if event.first_step and event.first_step != info.continued_at:  # not its start
                info.resumed_from_step = event.first_step
            if event.note:
                info.note = event.note
            self.flush(info=True, must=True)
        elif isinstance(event, Finished):
            assert isinstance(info, SviInfo)
            info.final_loss = event.final_loss
            self.flush(must=True)
        elif isinstance(event, ChainProgress):
            assert isinstance(info, McmcInfo)
            self.chain_done[event.chain] = event.done
            self.step = sum(self.chain_done.values())
            info.chain_progress = {
                **info.chain_progress,
                str(event.chain): ChainState(
                    done=event.done, total=event.total, warmup=event.warmup,
                    divergences=event.divergences,
                ),
            }  # fmt: skip
            if self._due():
                self.flush(info=True)
        elif isinstance(event, McmcStarted):
            assert isinstance(info, McmcInfo)
            info.method, info.device, info.chains = event.method, event.device, event.chains
            info.jit, info.parallel = event.jit, event.parallel
            self.flush(info=True, must=True)
        elif isinstance(event, McmcFinished):
            self.flush(must=True)
        elif isinstance(event, BatchStep):
            assert isinstance(info, BatchInfo)
            info.alive = event.alive
            self.step = event.step
            if event.step < event.total and self._due():
                self.flush(info=True)

    def flush(self, info: bool = False, must: bool = False) -> None:
        """Write pending losses (and checkpoint), renew the lease; raise Cancelled if the user
        asked. A database error keeps everything pending for the next flush; `must` (and any
        flush once db_retry_s passed without one that worked) retries with back-off instead,
        and gives up with InfraError at db_retry_s."""
        delay = 0.1
        info = info or bool(self.metrics)
        while True:
            try:
                with self.sessions() as session:
                    if self.on_flush is not None:
                        self.on_flush(session, self.step)
                    lines = self.joblog.write(session) if self.joblog is not None else None
                    cancel = record_progress(
                        session, self.job_id, worker=self.worker, losses=self.pending,
                        lease_s=self.lease_s, info=self.info.dump() if info else None,
                        checkpoint=self.checkpoint, step=self.step, metrics=self.metrics,
                    )  # fmt: skip
                break
            except DBAPIError as e:
                waited = time.monotonic() - self.last_ok
                if waited >= self.db_retry_s:
                    raise InfraError(
                        f"job {self.job_id}: database unreachable for {waited:.0f} s: "
                        f"{str(e).splitlines()[0]}"
                    ) from e
                log.warning("job %s: database error, %d steps kept, retrying: %s",
                            self.job_id, len(self.pending), str(e).splitlines()[0])  # fmt: skip
                if not must:
                    self.last_flush = time.monotonic()
                    return
                time.sleep(delay)
                delay = min(2 * delay, 2.0)
        if lines is not None and self.joblog is not None:
            self.joblog.written(lines)
        self.pending = []
        self.metrics = []
        self.checkpoint = None
        self.last_flush = self.last_ok = time.monotonic()
        if cancel:
            raise Cancelled(f"job {self.job_id}: cancelled by the user")

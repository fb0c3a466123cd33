"""Sink: consumes inference events, writes loss rows and checkpoints in batches, renews the
lease, checks cancel, and rides out a database that briefly does not answer."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from db.jobs import record_progress
from inference.checkpoint import CHECKPOINT_FORMAT
from inference.events import (
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

log = logging.getLogger(__name__)


class Sink:
    """One per running job. Flushes every `flush_every_s` seconds, at each checkpoint and at
    the end; a checkpoint is written in the same transaction as the losses before it."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        *,
        worker: str,
        lease_s: float,
        flush_every_s: float,
        info: dict[str, Any],
        db_retry_s: float = 30.0,
    ) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.worker = worker
        self.lease_s = lease_s
        self.flush_every_s = flush_every_s
        self.db_retry_s = db_retry_s
        self.info = info
        self.pending: list[tuple[int, float]] = []
        self.metrics: list[tuple[str, int, int, float]] = []
        self.checkpoint: tuple[int, str, bytes] | None = None
        self.last_flush = self.last_ok = time.monotonic()
        self.final_loss: float | None = None
        self.chain_done: dict[int, int] = {}  # MCMC: iterations done by chain
        self.step: int | None = None

    def add(self, event: Event) -> None:
        if isinstance(event, Step):
            self.pending.append((event.step, event.loss))
            if time.monotonic() - self.last_flush >= self.flush_every_s:
                self.flush()
        elif isinstance(event, Metric):
            self.metrics.append((event.name, event.step, event.epoch, event.value))
            self.info.setdefault("metrics", {})[event.name] = event.value  # the latest
        elif isinstance(event, Checkpoint):
            self.checkpoint = (event.step, CHECKPOINT_FORMAT, event.content)
            self.flush()
        elif isinstance(event, Started):
            self.info.update(elbo=event.elbo, device=event.device)
            if event.first_step:
                self.info["resumed_from_step"] = event.first_step
            if event.note:
                self.info["note"] = event.note
            self.flush(info=True, must=True)
        elif isinstance(event, Finished):
            self.final_loss = event.final_loss
            self.flush(must=True)
        elif isinstance(event, ChainProgress):
            self.chain_done[event.chain] = event.done
            self.step = sum(self.chain_done.values())
            chains = self.info.setdefault("chain_progress", {})
            chains[str(event.chain)] = {
                "done": event.done, "total": event.total, "warmup": event.warmup,
                "divergences": event.divergences,
            }  # fmt: skip
            if time.monotonic() - self.last_flush >= self.flush_every_s:
                self.flush(info=True)
        elif isinstance(event, McmcStarted):
            self.info.update(
                method=event.method, device=event.device, chains=event.chains,
                jit=event.jit, parallel=event.parallel,
            )  # fmt: skip
            self.flush(info=True, must=True)
        elif isinstance(event, McmcFinished):
            self.flush(must=True)

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
                    cancel = record_progress(
                        session, self.job_id, worker=self.worker, losses=self.pending,
                        lease_s=self.lease_s, info=dict(self.info) if info else None,
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
        self.pending = []
        self.metrics = []
        self.checkpoint = None
        self.last_flush = self.last_ok = time.monotonic()
        if cancel:
            raise Cancelled(f"job {self.job_id}: cancelled by the user")

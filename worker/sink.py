"""Sink: consumes inference events, writes loss rows in batches, renews the lease, checks cancel."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.jobs import record_progress
from inference.events import Event, Finished, Started, Step
from kiln.errors import Cancelled


class Sink:
    """One per running job. Flushes every `flush_every_s` seconds and at the end."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        *,
        worker: str,
        lease_s: float,
        flush_every_s: float,
        info: dict[str, Any],
    ) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.worker = worker
        self.lease_s = lease_s
        self.flush_every_s = flush_every_s
        self.info = info
        self.pending: list[tuple[int, float]] = []
        self.last_flush = time.monotonic()
        self.final_loss: float | None = None

    def add(self, event: Event) -> None:
        if isinstance(event, Step):
            self.pending.append((event.step, event.loss))
            if time.monotonic() - self.last_flush >= self.flush_every_s:
                self.flush()
        elif isinstance(event, Started):
            self.info.update(elbo=event.elbo, device=event.device)
            if event.note:
                self.info["note"] = event.note
            self.flush(info=True)
        elif isinstance(event, Finished):
            self.final_loss = event.final_loss
            self.flush()

    def flush(self, info: bool = False) -> None:
        """Write pending losses and renew the lease; raise Cancelled if the user asked."""
        with self.sessions() as session:
            cancel = record_progress(
                session,
                self.job_id,
                worker=self.worker,
                losses=self.pending,
                lease_s=self.lease_s,
                info=dict(self.info) if info else None,
            )
        self.pending = []
        self.last_flush = time.monotonic()
        if cancel:
            raise Cancelled(f"job {self.job_id}: cancelled by the user")

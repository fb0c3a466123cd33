"""Reaper: the database is the source of truth; make the broker agree with it.

One pass (a thread in every worker, and `jobs scheduler`, run it every reaper_interval_s;
a fleet-wide lock lets one of them run each pass):
1. running jobs whose lease expired (their worker was killed, ran out of memory, lost its
   host) go back to queued and are sent again, or fail once they used their attempts;
2. queued jobs that have been queued for resend_after_s and that the broker holds no message
   for (Redis restarted without its data, a message lost between commit and send, a message
   taken by a worker of another database) are sent again.
A duplicate message is harmless: claiming is a conditional UPDATE, so the second is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from db.finish import Released
from db.reaping import mark_resent, queued_since, reap_expired
from scheduler.routing import broker_priority

log = logging.getLogger(__name__)

# send(job_id, queue, broker_priority), as for submit; job_ids_in_broker(queues) -> set of ids.
Send = Callable[[str, str, int], None]
BrokerJobIds = Callable[[Iterable[str]], set[str]]


@dataclass
class PassReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.resent or self.errors)


class Reaper:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        send: Send,
        broker_job_ids: BrokerJobIds | None,
        *,
        resend_after_s: float,
    ) -> None:
        self.sessions = sessions
        self.send = send
        self.broker_job_ids = broker_job_ids
        self.resend_after_s = resend_after_s

    def run_once(self) -> PassReport:
        report = PassReport()
        with self.sessions() as session:
            reaped = reap_expired(session)
        report.failed = reaped.failed
        for job_id in reaped.failed:
            log.warning("job %s: lost its worker on its last attempt; failed", job_id,
                        extra={"job_id": job_id})  # fmt: skip
        report.requeued = self._send(reaped.requeued, report, "lease expired; sent again")
        if self.broker_job_ids is None:
            return report
        with self.sessions() as session:
            stale = queued_since(session, self.resend_after_s)
        if not stale:
            return report
        try:
            present = self.broker_job_ids(sorted({job.queue for job in stale}))
        except Exception as e:  # broker down: nothing can be sent now anyway
            report.errors.append(f"broker not readable: {e}")
            log.warning("reaper: broker not readable: %s", e)
            return report
        missing = [job for job in stale if job.id not in present]
        report.resent = self._send(missing, report, "queued but not in the broker; sent again")
        with self.sessions() as session:
            mark_resent(session, report.resent)
        return report

    def _send(self, jobs: list[Released], report: PassReport, why: str) -> list[str]:
        sent = []
        for job in jobs:
            try:
                self.send(job.id, job.queue, broker_priority(job.priority))
            except Exception as e:  # stays queued; the next pass finds it missing and resends
                report.errors.append(f"job {job.id}: send failed: {e}")
                log.warning("job %s: %s, but the send failed: %s", job.id, why, e,
                            extra={"job_id": job.id})  # fmt: skip
                continue
            log.info("job %s: %s (queue %s)", job.id, why, job.queue, extra={"job_id": job.id})
            sent.append(job.id)
        return sent

"""The reaper loop that `jobs worker` runs in a thread and `jobs scheduler` in the foreground."""

from __future__ import annotations

import logging
import threading

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from kiln.settings import Settings
from scheduler.reaper import Reaper
from worker.app import Sender
from worker.broker import BrokerView

log = logging.getLogger(__name__)


def make_reaper(sessions: sessionmaker[Session], app: Celery, settings: Settings) -> Reaper:
    return Reaper(sessions, Sender(app), BrokerView(app).job_ids,
                  resend_after_s=settings.resend_after_s)  # fmt: skip


def reaper_loop(
    stop: threading.Event, sessions: sessionmaker[Session], app: Celery, settings: Settings
) -> None:
    """A pass every reaper_interval_s until `stop` is set; one reaper per pass fleet-wide."""
    reaper = make_reaper(sessions, app, settings)
    broker = BrokerView(app)
    interval = settings.reaper_interval_s
    while not stop.wait(interval):
        try:
            if not broker.try_lock("reaper", interval * 0.9):
                continue
        except Exception as e:  # broker down: still requeue expired leases (sends may fail)
            log.debug("reaper: no broker lock (%s); running the pass anyway", e)
        try:
            report = reaper.run_once()
        except Exception as e:  # database down: the next pass retries
            log.warning("reaper: pass failed: %s", e)
            continue
        if report:
            log.info("reaper: requeued %d, failed %d, resent %d, errors %d",
                     len(report.requeued), len(report.failed), len(report.resent),
                     len(report.errors))  # fmt: skip

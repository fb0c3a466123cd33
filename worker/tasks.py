"""The one Celery task: run_job(job_id). The message carries only the id."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from kiln.logs import job_context
from scheduler.routing import broker_priority
from worker.app import Sender
from worker.run import execute_job
from worker.runtime import runtime

log = logging.getLogger(__name__)


# Celery ships no types: its decorator is untyped to mypy.
@shared_task(name="kiln.run_job", bind=True, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
def run_job(self: Task, job_id: str) -> str:
    """Claim, run and store one job; a job put back to queued is sent again, and so are the
    jobs that were waiting for this one (predict jobs of a fit that succeeded)."""
    with job_context(job_id):  # every line logged while this job runs carries its id
        outcome = execute_job(runtime(), job_id)
        if outcome.status == "queued":
            self.app.send_task(
                "kiln.run_job", args=[job_id], queue=self.request.delivery_info.get("routing_key")
            )
        sender = Sender(self.app)
        for job in outcome.released:
            sender(job.id, job.queue, broker_priority(job.priority))
            log.info("job %s: released by %s, sent to %s", job.id, job_id, job.queue)
        return outcome.status

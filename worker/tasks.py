"""The one Celery task: run_job(job_id). The message carries only the id."""

from __future__ import annotations

import logging

from celery import shared_task

from worker.run import execute_job
from worker.runtime import runtime

log = logging.getLogger(__name__)


@shared_task(name="kiln.run_job", bind=True, acks_late=True, ignore_result=True)
def run_job(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    """Claim, run and store one job; a job put back to queued is sent again."""
    status = execute_job(runtime(), job_id)
    if status == "queued":
        self.app.send_task(
            "kiln.run_job", args=[job_id], queue=self.request.delivery_info.get("routing_key")
        )
    return status

"""From "a user wants this" to "a worker has it": checks by job kind, datasets, routing, sending."""

from scheduler.submit import submit_job

__all__ = ["submit_job"]

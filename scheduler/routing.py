"""spec -> (queue, broker priority): where a job goes and how soon."""

from __future__ import annotations

from scheduler.spec import JobSpec


def route(spec: JobSpec) -> str:
    """The queue: as asked, else `gpu` for device=cuda and `cpu` otherwise."""
    if spec.queue is not None:
        return spec.queue
    return "gpu" if spec.device == "cuda" else "cpu"


def broker_priority(priority: int) -> int:
    """Kiln's priority (0-9, higher runs sooner) as Celery's Redis priority (0 runs first)."""
    return 9 - priority

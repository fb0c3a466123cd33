"""spec -> (queue, broker priority): where a job goes and how soon."""

from __future__ import annotations

from collections.abc import Callable

from kiln.specs import BaseSpec


def route(spec: BaseSpec, gpu_free: Callable[[], bool] = lambda: False) -> str:
    """The queue: as asked, else `gpu` for device=cuda, `gpu` for device=auto when a live GPU
    worker is idle right now, and `cpu` otherwise."""
    if spec.queue is not None:
        return spec.queue
    if spec.device == "cuda":
        return "gpu"
    if spec.device == "auto" and gpu_free():
        return "gpu"
    return "cpu"


def broker_priority(priority: int) -> int:
    """Kiln's priority (0-9, higher runs sooner) as Celery's Redis priority (0 runs first)."""
    return 9 - priority

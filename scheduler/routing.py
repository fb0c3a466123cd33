"""spec -> (queue, broker priority): where a job goes and how soon."""

from __future__ import annotations

from collections.abc import Callable

from kiln.specs import BaseSpec

BASE_QUEUES = ("cpu", "gpu")
# Jobs that run a user's model file go to a queue of their own, which only workers that allow
# user code (KILN_ALLOW_USER_CODE) take from: they wait for such a worker rather than fail.
USER_SUFFIX = ".user"
USER_CODE_KINDS = frozenset({"user_svi_fit", "user_mcmc_fit", "user_predict"})
# Kiln's sampler keeps its chains on the CPU (inference/nuts.py): `--device auto` of an MCMC
# job goes to the cpu queue, and `--device cuda` is refused (scheduler/kinds/user.py).
CPU_ONLY_KINDS = frozenset({"user_mcmc_fit", "user_mcmc_chain"})
QUEUES = (*BASE_QUEUES, *(q + USER_SUFFIX for q in BASE_QUEUES))


def route(spec: BaseSpec, gpu_free: Callable[[], bool] = lambda: False) -> str:
    """The queue: as asked, else `gpu` for device=cuda, `gpu` for device=auto when a live GPU
    worker is idle right now (never for MCMC), and `cpu` otherwise; `.user` added for a
    user's model file."""
    kind = getattr(spec, "kind", None)
    if spec.queue is not None:
        queue = spec.queue
    elif spec.device == "cuda" or (
        spec.device == "auto" and kind not in CPU_ONLY_KINDS and gpu_free()
    ):
        queue = "gpu"
    else:
        queue = "cpu"
    return queue + USER_SUFFIX if kind in USER_CODE_KINDS else queue


def worker_queues(asked: list[str], runs_user_code: bool) -> list[str]:
    """The queues a worker started with `--queues ASKED` takes from: with user code allowed,
    each one's `.user` twin too."""
    twins = [q + USER_SUFFIX for q in asked if runs_user_code and q in BASE_QUEUES]
    return [*asked, *(t for t in twins if t not in asked)]


def broker_priority(priority: int) -> int:
    """Kiln's priority (0-9, higher runs sooner) as Celery's Redis priority (0 runs first)."""
    return 9 - priority

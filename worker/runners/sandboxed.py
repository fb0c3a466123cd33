"""What the three runners of users' model files share: the stored source and data, and a
Sandbox for the job whose cancel flag it polls and whose output lands in the job's info."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from db.jobs import cancel_requested
from db.sources import load_source
from inference.events import Event
from inference.fit import resolve_device
from kiln.errors import UserError
from scheduler.routing import CPU_ONLY_KINDS
from worker.context import DataBlob, JobContext
from worker.joblog import current_log
from worker.sandbox.process import Sandbox, SandboxLimits
from worker.sandbox.wire import Frame, as_bytes_array


def allow_user_code(ctx: JobContext[Any]) -> None:
    if not ctx.settings.runs_user_code:
        raise UserError(
            f"worker {ctx.worker} does not run users' model files (KILN_ALLOW_USER_CODE is off);"
            " a fleet turns it on for workers that may run code from whoever submits jobs"
        )


def stored_source(ctx: JobContext[Any], source_id: str | None) -> str:
    """The model file's text, by its stored hash."""
    allow_user_code(ctx)
    if source_id is None:
        raise UserError(f"job {ctx.job_id} has no stored model source")
    with ctx.sessions() as session:
        return load_source(session, source_id).content


def data_arrays(name: str, blob: DataBlob | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A data set as the request's `NAME_name` field and `NAME` bytes."""
    if blob is None:
        return {}, {}
    return {f"{name}_name": blob.name}, {name: as_bytes_array(blob.content)}


def in_sandbox(
    ctx: JobContext[Any], header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> Generator[Event, None, Frame]:
    """Run the job's model in a sandbox: its events, then its result frame. What the model
    printed and the sandbox's isolation are added to the job's info whatever the outcome."""
    allow_user_code(ctx)

    def cancelled() -> bool:
        with ctx.sessions() as session:
            return cancel_requested(session, ctx.job_id)

    joblog = current_log()  # what the model prints goes to the job's log as it comes
    sandbox = Sandbox(
        SandboxLimits.from_settings(ctx.settings),
        ctx.job_id,
        cancelled,
        on_output=joblog.feed_output if joblog is not None else None,
    )
    device = str(getattr(ctx.spec, "device", "cpu"))
    # An MCMC unit samples on the CPU (scheduler.routing.CPU_ONLY_KINDS), even on a GPU worker.
    device = "cpu" if getattr(ctx.spec, "kind", None) in CPU_ONLY_KINDS else resolve_device(device)
    request = {"spec": ctx.spec.model_dump(mode="json"), "device": device, **header}
    try:
        return (yield from sandbox.run(request, arrays))
    finally:
        ctx.info.output = sandbox.output.text() or None
        if joblog is not None:
            joblog.end_output()
        ctx.info.sandbox_network = sandbox.network

"""SviRunner: the run and store every SVI fit shares (built-in, library and user models)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.orm import Session

from db.claims import get_checkpoint
from db.models import Job, JobStatus
from db.results import get_fitted_state, store_fit_results
from inference.checkpoint import CHECKPOINT_FORMAT, continuation
from inference.events import Event
from inference.state import STATE_FORMAT, dump_state, param_values
from inference.svi import resolve_elbo, run_svi
from kiln.continuation import Continued
from kiln.errors import UserError
from kiln.records import SiteStats
from kiln.specs import FitSpec, LibraryFitSpec, SviOptions, UserSviFitSpec, parse_job_spec
from worker.context import JobContext
from worker.runners.base import Runner

log = logging.getLogger(__name__)

SviSpec = TypeVar("SviSpec", FitSpec, LibraryFitSpec, UserSviFitSpec)
Summary = tuple[list[SiteStats], dict[str, np.ndarray]]


@dataclass
class SviJob:
    """A prepared SVI fit: the problem (model, guide, args, kwargs, device, jit_safe; for a
    user's model file, its source text: the sandbox builds the rest), how to draw its
    posterior summary, and the run's settings; `run` fills in the results."""

    problem: Any
    summarize: Callable[[], Summary]
    steps: int
    lr: float
    elbo: str
    guide: str
    options: dict[str, Any] = field(default_factory=dict)  # run_svi's mini-batch options
    state: bytes = b""
    guide_params: dict[str, np.ndarray] = field(default_factory=dict)
    summary: Summary = field(default_factory=lambda: ([], {}))
    # Rows stored after the draws by a runner's own store (a user model's log-likelihood).
    extra_rows: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)


class SviRunner(Runner[SviSpec, SviJob]):
    """SVI steps (resuming from the job's checkpoint if there is one), then the fitted state,
    the guide's parameters and the posterior summary, stored as one fit's results."""

    def run(self, ctx: JobContext[SviSpec], job: SviJob) -> Iterator[Event]:
        spec = ctx.spec
        resume = saved_checkpoint(ctx)
        every, every_s = checkpoint_intervals(ctx, spec)
        problem = job.problem
        yield from run_svi(
            problem.model, problem.guide, tuple(getattr(problem, "args", ())),
            getattr(problem, "kwargs", None), steps=job.steps, lr=job.lr, optim=spec.optim,
            elbo=resolve_elbo(job.elbo, bool(getattr(problem, "jit_safe", False))),
            device=problem.device, resume=resume,
            checkpoint_every_steps=every, checkpoint_every_s=every_s, **job.options,
        )  # fmt: skip
        job.state = dump_state()  # right away: saving after the guide ran again can fail
        job.guide_params = param_values()
        job.summary = job.summarize()

    def store(self, ctx: JobContext[SviSpec], job: SviJob, session: Session) -> None:
        sites, draws = job.summary
        ctx.info.fit_seconds = ctx.seconds()
        store_fit_results(
            session, ctx.job_id, sites=sites, draws=draws, guide_params=job.guide_params,
            state=job.state, state_format=STATE_FORMAT, guide=job.guide,
        )  # fmt: skip


def checkpoint_intervals(ctx: JobContext[Any], spec: SviOptions) -> tuple[int, float]:
    """(steps, seconds) between checkpoints: the spec's where it says, else the worker's."""
    every, every_s = spec.checkpoint_every, spec.checkpoint_every_s
    return (
        ctx.settings.checkpoint_every if every is None else every,
        ctx.settings.checkpoint_every_s if every_s is None else every_s,
    )


def saved_checkpoint(ctx: JobContext[Any], format: str = CHECKPOINT_FORMAT) -> bytes | None:
    """The job's stored checkpoint, if it has one of `format` this Kiln can resume from; else,
    for a continued fit, its parent's state made into one (so a retry goes on from its own)."""
    with ctx.sessions() as session:
        saved = get_checkpoint(session, ctx.job_id)
        if saved is None:
            continued = getattr(ctx.spec, "continued", None)
            return None if continued is None else parent_state(ctx, session, continued)
        if saved.format != format:
            log.warning("job %s: checkpoint format %s unknown; starting over", ctx.job_id,
                        saved.format)  # fmt: skip
            return None
        log.info("job %s: resuming from its checkpoint at step %d", ctx.job_id, saved.step)
        return bytes(saved.content)


def parent_state(ctx: JobContext[Any], session: Session, continued: Continued) -> bytes:
    """A continued fit's start: its parent's fitted state (succeeded) or latest checkpoint
    (cancelled, failed), as the submit check found it, with this job's lr. The parent's RNG
    state is kept when the seed is the parent's, so continuing a cancelled fit draws what the
    uninterrupted fit would have."""
    parent = session.get(Job, continued.job)
    content: bytes | None = None
    at: int | None = None
    if parent is not None and parent.status == JobStatus.SUCCEEDED.value:
        state = get_fitted_state(session, parent.id)
        content, at = (bytes(state.content), parent.total_steps) if state else (None, None)
    elif parent is not None:
        saved = get_checkpoint(session, parent.id)
        content, at = (bytes(saved.content), saved.step) if saved else (None, None)
    if parent is None or content is None or at != continued.step:
        raise UserError(
            f"job {ctx.job_id} continues fit {continued.job} from step {continued.step}, but"
            " that state is no longer stored; continue the fit again"
        )
    spec = ctx.spec
    lr = spec.lr if hasattr(spec, "lr") else spec.options.get("lr")
    keep_rng = parse_job_spec(dict(parent.spec)).seed == spec.seed
    log.info("job %s: continuing fit %s from step %d", ctx.job_id, parent.id, continued.step)
    return continuation(content, step=continued.step, lr=lr, keep_rng=keep_rng)

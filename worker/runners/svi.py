"""SviRunner: the run and store every SVI fit shares (built-in, library and user models)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.orm import Session

from db.claims import get_checkpoint
from db.results import store_fit_results
from inference.checkpoint import CHECKPOINT_FORMAT
from inference.events import Event
from inference.state import STATE_FORMAT, dump_state, param_values
from inference.svi import resolve_elbo, run_svi
from kiln.records import SiteStats
from kiln.specs import FitSpec, LibraryFitSpec, SviOptions, UserSviFitSpec
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


def saved_checkpoint(ctx: JobContext[Any]) -> bytes | None:
    """The job's stored checkpoint, if it has one this Kiln can resume from."""
    with ctx.sessions() as session:
        saved = get_checkpoint(session, ctx.job_id)
        if saved is None:
            return None
        if saved.format != CHECKPOINT_FORMAT:
            log.warning("job %s: checkpoint format %s unknown; starting over", ctx.job_id,
                        saved.format)  # fmt: skip
            return None
        log.info("job %s: resuming from its checkpoint at step %d", ctx.job_id, saved.step)
        return bytes(saved.content)

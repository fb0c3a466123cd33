"""A unit of an MCMC job's chains (kind user_mcmc_chain): its chains sampled in a sandbox,
resumed from the unit's checkpoint when it has one, its draws stored under the unit's own id
until its job gathers them (worker/runners/user.UserMcmcFit)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from db.chains import gather_progress, mark_running, merge_progress
from db.jobs import get_job
from db.results import add_samples
from inference.events import Event, McmcFinished
from inference.mcmc_units import UNIT_FORMAT
from kiln.errors import ModelError, UserError
from kiln.jobinfo import McmcInfo
from kiln.specs import UserMcmcChainSpec, UserMcmcFitSpec, parse_job_spec
from worker.context import JobContext
from worker.runners.base import Runner
from worker.runners.loglik import read_loglik
from worker.runners.sandboxed import data_arrays, in_sandbox, stored_source
from worker.runners.svi import saved_checkpoint
from worker.sandbox.wire import Frame, as_bytes_array

MAX_SITES = 10_000
MAX_CHECKS = 10_000


@dataclass
class _Unit:
    job: UserMcmcFitSpec
    source: str
    finished: McmcFinished | None = None
    rows: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)


class UserMcmcChain(Runner[UserMcmcChainSpec, _Unit]):
    """The unit's chains in the sandbox (inference.mcmc_units); its checkpoints through the
    Sink; its job's progress is the sum of its units' (each flush)."""

    kind = "user_mcmc_chain"

    def prepare(self, ctx: JobContext[UserMcmcChainSpec]) -> _Unit:
        if ctx.data is None:
            raise UserError(f"job {ctx.job_id} has no stored data")
        with ctx.sessions() as session:
            parent = get_job(session, ctx.spec.parent)
            job = parse_job_spec(dict(parent.spec))
            mark_running(session, parent.id)
            session.commit()
        if not isinstance(job, UserMcmcFitSpec):
            raise UserError(f"unit {ctx.job_id}: its job {ctx.spec.parent} is not an MCMC fit")
        return _Unit(job, stored_source(ctx, ctx.source_id))

    def on_flush(self, ctx: JobContext[UserMcmcChainSpec], session: Session,
                 step: int | None) -> None:  # fmt: skip
        gather_progress(session, ctx.spec.parent)
        info = ctx.info
        assert isinstance(info, McmcInfo)
        chains = {k: v.model_dump(mode="json") for k, v in info.chain_progress.items()}
        merge_progress(session, ctx.spec.parent, chains, dict(info.metrics))

    def run(self, ctx: JobContext[UserMcmcChainSpec], u: _Unit) -> Iterator[Event]:
        header, arrays = data_arrays("data", ctx.data)
        resume = saved_checkpoint(ctx, UNIT_FORMAT)
        if resume is not None:
            arrays["resume"] = as_bytes_array(resume)
        header.update(
            source=u.source, fit_spec=u.job.model_dump(mode="json"),
            checkpoint_every_draws=max(1, ctx.settings.checkpoint_every // 5),
            checkpoint_every_s=ctx.settings.checkpoint_every_s,
        )  # fmt: skip
        events = in_sandbox(ctx, header, arrays)
        try:
            while True:
                try:
                    event = next(events)
                except StopIteration as stop:
                    result: Frame = stop.value
                    break
                if isinstance(event, McmcFinished):
                    u.finished = _checked(event, ctx.spec, u.job)
                yield event
        finally:
            events.close()  # a cancel or a lost lease: the sandbox is killed
        if u.finished is None:
            raise ModelError("the model's process ended without its draws")
        draws = next(iter(u.finished.draws.values())).shape[1]
        u.rows, facts = read_loglik(result, ctx.spec.count * draws)
        info = ctx.info
        assert isinstance(info, McmcInfo)
        info.add_facts(facts)
        _facts(info, result.header.get("facts"), u.job)

    def store(self, ctx: JobContext[UserMcmcChainSpec], u: _Unit, session: Session) -> None:
        finished = u.finished
        assert finished is not None
        deterministic = set(finished.deterministic)
        rows: dict[str, tuple[str, np.ndarray]] = {}
        for site, v in finished.draws.items():
            kind = "deterministic" if site in deterministic else "posterior"
            rows[site] = (kind, v.reshape(-1, *v.shape[2:]))
        for name, v in finished.stats.items():
            rows[name] = ("sample_stats", v.reshape(-1))
        for site, v in finished.warmup_draws.items():
            rows[f"warmup:{site}"] = ("warmup", v.reshape(-1, *v.shape[2:]))
        rows.update(u.rows)
        add_samples(session, ctx.job_id, rows, summarize=False)
        info = ctx.info
        assert isinstance(info, McmcInfo)
        info.chains, info.jit = ctx.spec.count, finished.jit
        info.samples = int(next(iter(finished.draws.values())).shape[1])
        info.chain_seconds = [round(float(s), 3) for s in finished.chain_seconds]
        info.divergences = int(np.asarray(finished.stats.get("diverging", 0)).sum())
        info.deterministic_sites = sorted(deterministic)
        if finished.note:
            info.note = finished.note
        info.fit_seconds = ctx.seconds()
        gather_progress(session, ctx.spec.parent)


def _checked(event: McmcFinished, spec: UserMcmcChainSpec, job: UserMcmcFitSpec) -> McmcFinished:
    """The sandbox's draws, if they are the unit's chains x a number of draws the job allows."""
    if not event.draws or len(event.draws) > MAX_SITES or len(event.stats) > MAX_SITES:
        raise ModelError("the model's process sent an MCMC result without its draws")
    draws = next(iter(event.draws.values())).shape[1] if event.draws else 0
    if job.until is None and draws != job.samples or not 0 < draws <= job.draws_cap:
        raise ModelError(f"the model's process sent {draws} draws per chain, not {job.samples}")
    kept = event.warmup_draws if job.keep_warmup else {}
    if event.warmup_draws and not kept or set(kept) - set(event.draws):
        raise ModelError("the model's process sent warmup draws the spec did not ask for")
    for what, arrays, shape in (("draws", event.draws, (spec.count, draws)),
                                ("stats", event.stats, (spec.count, draws)),
                                ("warmup draws", kept, (spec.count, job.warmup))):  # fmt: skip
        for name, value in arrays.items():
            if value.shape[:2] != shape:
                raise ModelError(
                    f"the model's process sent MCMC {what} of `{name}` shaped {value.shape},"
                    f" not {shape[0]} chains x {shape[1]} draws"
                )
    if len(event.chain_seconds) != spec.count:
        raise ModelError("the model's process sent an MCMC result without its chains")
    return event


def _facts(info: McmcInfo, sent: Any, job: UserMcmcFitSpec) -> None:
    """The unit's engine, where it resumed and --until's checks, kept where well formed."""
    if not isinstance(sent, dict):
        return
    if sent.get("engine") in ("kiln", "pyro"):
        info.engine = str(sent["engine"])
    step = sent.get("step")
    if isinstance(step, dict) and step.get("compiler") in ("torch.jit", "inductor", ""):
        info.step = {
            "compiler": str(step["compiler"]),
            "inductor_from": _count(step.get("inductor_from")),
            "leapfrog_steps": _count(step.get("leapfrog_steps")),
        }
    resumed = sent.get("resumed_at")
    if isinstance(resumed, list) and len(resumed) <= MAX_CHECKS:
        info.resumed_at = [int(i) for i in resumed if isinstance(i, int) and i >= 0]
    until = sent.get("until")
    if job.until is not None and isinstance(until, dict):
        checks = until.get("checks")
        if isinstance(checks, list) and len(checks) <= MAX_CHECKS:
            info.until = {
                "targets": {k: float(v) for k, v in dict(until.get("targets", {})).items()
                            if isinstance(k, str) and isinstance(v, int | float)},
                "checks": [_check(c) for c in checks if isinstance(c, dict)],
                "met": bool(until.get("met")),
                "draws": int(until.get("draws", 0)),
                "cap": job.draws_cap,
            }  # fmt: skip


def _count(value: Any) -> int | None:
    """A count the sandbox sent, if it is one a database column holds (0 <= n < 2**63)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
    return int(value) if ok else None


def _check(c: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"draws": int(c.get("draws", 0))}
    for k in ("r_hat", "ess_bulk", "ess_tail"):
        v = c.get(k)
        out[k] = float(v) if isinstance(v, int | float) and np.isfinite(v) else None
    failing = c.get("failing")
    out["failing"] = [str(s)[:200] for s in failing[:100]] if isinstance(failing, list) else []
    return out

"""Users' own models: SVI (stored as built-in fits are) or MCMC, each run in a sandbox process
(worker/sandbox) that sends back its events and results; nothing of the user's file runs here."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete
from sqlalchemy.orm import Session

from db.chains import units_of
from db.models import JobStatus, Sample
from db.results import store_mcmc_results
from inference.events import Event, McmcFinished
from inference.posterior import summarize_draws
from inference.statecodec import is_encoded
from kiln.diagnostics import all_diagnostics, chain_summary
from kiln.errors import ModelError, UserError
from kiln.jobinfo import McmcInfo, SviInfo
from kiln.specs import UserMcmcFitSpec, UserSviFitSpec
from worker.context import JobContext
from worker.runners.base import Runner
from worker.runners.loglik import add_loglik_rows, read_loglik
from worker.runners.mcmcgather import gather, unit_record
from worker.runners.sandboxed import data_arrays, in_sandbox, stored_source
from worker.runners.svi import SviJob, SviRunner, checkpoint_intervals, saved_checkpoint
from worker.sandbox.wire import as_bytes_array

log = logging.getLogger(__name__)

MAX_SITES = 10_000


class UserSviFit(SviRunner[UserSviFitSpec]):
    """SviRunner's store; the fit itself (model, guide, steps, posterior draws) runs in the
    sandbox, resuming from the job's checkpoint when it has one."""

    kind = "user_svi_fit"

    def prepare(self, ctx: JobContext[UserSviFitSpec]) -> SviJob:
        spec = ctx.spec
        source = stored_source(ctx, ctx.source_id)
        if ctx.data is None:
            raise UserError(f"job {ctx.job_id} has no stored data")
        guide = spec.guide_function or spec.guide
        return SviJob(source, lambda: ([], {}), spec.steps, spec.lr, spec.elbo, guide)

    def run(self, ctx: JobContext[UserSviFitSpec], job: SviJob) -> Iterator[Event]:
        spec = ctx.spec
        every, every_s = checkpoint_intervals(ctx, spec)
        header, arrays = data_arrays("data", ctx.data)
        resume = saved_checkpoint(ctx)
        if resume is not None:
            arrays["resume"] = as_bytes_array(resume)
        header.update(source=job.problem, checkpoint_every_steps=every, checkpoint_every_s=every_s)
        result = yield from in_sandbox(ctx, header, arrays)
        state = result.blob("state")
        if state is None or not is_encoded(state):
            raise ModelError("the model's process sent no fitted state it could have written")
        sites = result.header.get("sites")
        if not isinstance(sites, dict) or not all(
            isinstance(v, list) and len(v) <= MAX_SITES and all(isinstance(n, str) for n in v)
            for v in sites.values()
        ):  # fmt: skip
            raise ModelError("the model's process sent a malformed list of sites")
        assert isinstance(ctx.info, SviInfo)
        ctx.info.add_facts({k: sites.get(k, []) for k in ("latent_sites", "deterministic_sites")})
        draws = _numeric(result.group("draw"), "draws", spec.num_samples)
        job.state = state
        job.guide_params = _numeric(result.group("param"), "guide parameters")
        job.summary = [summarize_draws(site, values) for site, values in draws.items()], draws
        job.extra_rows, facts = read_loglik(result, spec.num_samples)
        ctx.info.add_facts(facts)

    def store(self, ctx: JobContext[UserSviFitSpec], job: SviJob, session: Session) -> None:
        super().store(ctx, job, session)
        add_loglik_rows(session, ctx.job_id, job.extra_rows, len(job.summary[1]))


def _numeric(
    arrays: dict[str, np.ndarray], what: str, draws: int | None = None
) -> dict[str, np.ndarray]:
    """Arrays from the sandbox: not too many, and `draws` rows each when given."""
    if len(arrays) > MAX_SITES:
        raise ModelError(f"the model's process sent {len(arrays)} {what}, over {MAX_SITES}")
    for name, value in arrays.items():
        if draws is not None and (value.ndim == 0 or value.shape[0] != draws):
            raise ModelError(
                f"the model's process sent {what} of `{name}` shaped {value.shape}, not"
                f" {draws} draws"
            )
    return arrays


@dataclass
class _Mcmc:
    """The units' draws gathered: chain-major by site and kind, in unit order."""

    units: list[tuple[str, int, int]]  # (unit id, first chain, chains)
    finished: McmcFinished | None = None
    loglik: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    infos: list[McmcInfo] = field(default_factory=list)


class UserMcmcFit(Runner[UserMcmcFitSpec, _Mcmc]):
    """Its chains ran as units of work (worker/runners/chain.py), each storing its draws under
    its own id; once all succeeded this job gathers them: draws chain-major, diagnostics by
    site, a summary by chain, the units' records; the units' draws are then dropped."""

    kind = "user_mcmc_fit"

    def prepare(self, ctx: JobContext[UserMcmcFitSpec]) -> _Mcmc:
        with ctx.sessions() as session:
            units = units_of(session, ctx.job_id)
            if not units or any(u.status != JobStatus.SUCCEEDED.value for u in units):
                raise UserError(f"job {ctx.job_id}: its chain units have not all succeeded")
            m = _Mcmc([(u.id, int(u.spec["first"]), int(u.spec["count"])) for u in units])
            m.infos = [McmcInfo.model_validate(u.info or {}) for u in units]
            m.finished, m.loglik = gather(session, ctx.spec, m.units, m.infos)
        info = ctx.info
        assert isinstance(info, McmcInfo)
        info.units = [unit_record(u, i) for u, i in zip(units, m.infos, strict=True)]
        return m

    def store(self, ctx: JobContext[UserMcmcFitSpec], m: _Mcmc, session: Session) -> None:
        spec, finished = ctx.spec, m.finished
        assert finished is not None
        draws = finished.draws
        chains = spec.chains
        flat = {site: v.reshape(chains * v.shape[1], *v.shape[2:]) for site, v in draws.items()}
        sites = [summarize_draws(site, values) for site, values in flat.items()]
        diagnostics = all_diagnostics(draws)
        deterministic = set(finished.deterministic or ())
        stored: dict[str, tuple[str, np.ndarray]] = {
            site: ("deterministic" if site in deterministic else "posterior", values)
            for site, values in flat.items()
        }
        for name, values in finished.stats.items():
            stored[name] = ("sample_stats", np.asarray(values).reshape(-1))
        for site, values in finished.warmup_draws.items():  # read back by kiln.warmup
            stored[f"warmup:{site}"] = ("warmup", values.reshape(-1, *values.shape[2:]))
        stored.update(m.loglik)
        per_chain = chain_summary(finished.stats, list(finished.chain_seconds))
        r_hats = [float(np.nanmax(d[0])) for d in diagnostics.values() if np.isfinite(d[0]).any()]
        info = ctx.info
        assert isinstance(info, McmcInfo)
        info.method, info.chains = spec.method, chains
        info.warmup, info.jit = spec.warmup, finished.jit
        info.samples = int(next(iter(draws.values())).shape[1])
        info.chain_seconds = [round(float(s), 3) for s in finished.chain_seconds]
        info.divergences = sum(int(c.get("divergences", 0)) for c in per_chain)
        info.per_chain = per_chain
        info.max_r_hat = max(r_hats) if r_hats else None
        engines = {i.engine for i in m.infos if i.engine}
        info.engine = engines.pop() if len(engines) == 1 else ",".join(sorted(engines)) or None
        info.parallel = "units" if len(m.units) > 1 else ("vectorized" if chains > 1 else "single")
        info.fit_seconds = ctx.seconds()
        if m.infos and m.infos[0].until is not None:
            info.until = until = m.infos[0].until
            checks = until.get("checks") or [{}]
            if not until.get("met"):
                failing = ", ".join(checks[-1].get("failing") or []) or "?"
                finished_note = (f"--until {spec.until} not met at the cap of {until.get('cap')}"
                                 f" draws per chain; sites failing: {failing}")  # fmt: skip
                info.note = finished_note + (f"; {finished.note}" if finished.note else "")
        for key in ("site_dims", "log_likelihood_note"):
            value = getattr(m.infos[0], key, None) if m.infos else None
            if value is not None:
                setattr(info, key, value)
        if finished.note and not (info.until and not info.until.get("met")):
            info.note = finished.note
        store_mcmc_results(session, ctx.job_id, sites=sites, diagnostics=diagnostics, draws=stored)
        session.execute(delete(Sample).where(Sample.job_id.in_([u for u, _, _ in m.units])))
        log.info("job %s: %d chains gathered from %d units, max r_hat %s", ctx.job_id, chains,
                 len(m.units), info.max_r_hat)  # fmt: skip

"""Users' own models: load the stored source, then SVI (as built-in fits) or MCMC."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from db.results import store_mcmc_results
from db.sources import load_source
from inference.events import Event, McmcFinished
from inference.fit import resolve_device
from inference.mcmc import run_mcmc
from inference.posterior import summarize_draws
from inference.userfit import draw_sites, prepare_user_fit
from kiln.diagnostics import all_diagnostics, chain_summary
from kiln.errors import UserError
from kiln.jobinfo import McmcInfo, SviInfo
from kiln.specs import UserMcmcFitSpec, UserSviFitSpec
from kiln.userdata import parse_user_data
from worker.context import JobContext
from worker.runners.base import Runner
from worker.runners.svi import Summary, SviJob, SviRunner

log = logging.getLogger(__name__)


def allow_user_code(ctx: JobContext[Any]) -> None:
    if not ctx.settings.runs_user_code:
        raise UserError(
            f"worker {ctx.worker} does not run users' model files (KILN_ALLOW_USER_CODE is off);"
            " a fleet turns it on for workers that may run code from whoever submits jobs"
        )


def user_source_and_data(
    ctx: JobContext[Any], source_id: str | None, data: Any
) -> tuple[str, dict[str, Any]]:
    """The model file's text (by its stored hash) and the data as names to values."""
    allow_user_code(ctx)
    if source_id is None or data is None:
        raise UserError(f"job {ctx.job_id} has no stored model source or data")
    with ctx.sessions() as session:
        source = load_source(session, source_id).content
    _, values = parse_user_data(data.content, data.name)
    return source, values


class UserSviFit(SviRunner[UserSviFitSpec]):
    kind = "user_svi_fit"

    def prepare(self, ctx: JobContext[UserSviFitSpec]) -> SviJob:
        spec = ctx.spec
        source, data = user_source_and_data(ctx, ctx.source_id, ctx.data)
        assert spec.seed is not None
        problem = prepare_user_fit(
            source, spec.model_file, spec.model_function, data, guide=spec.guide,
            guide_function=spec.guide_function, seed=spec.seed, device=spec.device,
        )  # fmt: skip
        assert isinstance(ctx.info, SviInfo)
        ctx.info.add_facts(dict(problem.info))

        def summarize() -> Summary:
            draws = draw_sites(
                problem.model, problem.guide, problem.kwargs, problem.latent_sites,
                spec.num_samples,
            )  # fmt: skip
            return [summarize_draws(site, values) for site, values in draws.items()], draws

        guide = spec.guide_function or spec.guide
        return SviJob(problem, summarize, spec.steps, spec.lr, spec.elbo, guide)


@dataclass
class _Mcmc:
    source: str
    data: dict[str, Any]
    finished: McmcFinished | None = None


class UserMcmcFit(Runner[UserMcmcFitSpec, _Mcmc]):
    """Chains in parallel (inference.mcmc), then draws chain-major, diagnostics by site and a
    summary by chain."""

    kind = "user_mcmc_fit"

    def prepare(self, ctx: JobContext[UserMcmcFitSpec]) -> _Mcmc:
        source, data = user_source_and_data(ctx, ctx.source_id, ctx.data)
        return _Mcmc(source, data)

    def run(self, ctx: JobContext[UserMcmcFitSpec], m: _Mcmc) -> Iterator[Event]:
        spec = ctx.spec
        assert spec.seed is not None
        events = run_mcmc(
            m.source, spec.model_file, spec.model_function, m.data, method=spec.method,
            warmup=spec.warmup, samples=spec.samples, chains=spec.chains, seed=spec.seed,
            target_accept=spec.target_accept, max_tree_depth=spec.max_tree_depth,
            num_steps=spec.num_steps, jit=spec.jit != "off", device=resolve_device(spec.device),
        )  # fmt: skip
        try:
            for event in events:
                if isinstance(event, McmcFinished):
                    m.finished = event
                yield event
        finally:
            events.close()  # a cancel or a lost lease stops the chains' processes too
        if m.finished is None:
            raise RuntimeError("the MCMC run ended without its draws")

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
        per_chain = chain_summary(finished.stats, list(finished.chain_seconds))
        r_hats = [float(np.nanmax(d[0])) for d in diagnostics.values() if np.isfinite(d[0]).any()]
        info = ctx.info
        assert isinstance(info, McmcInfo)
        info.method, info.chains = spec.method, chains
        info.warmup, info.samples, info.jit = spec.warmup, spec.samples, finished.jit
        info.chain_seconds = [round(float(s), 3) for s in finished.chain_seconds]
        info.divergences = sum(int(c.get("divergences", 0)) for c in per_chain)
        info.per_chain = per_chain
        info.max_r_hat = max(r_hats) if r_hats else None
        info.fit_seconds = ctx.seconds()
        if finished.note:
            info.note = finished.note
        store_mcmc_results(session, ctx.job_id, sites=sites, diagnostics=diagnostics, draws=stored)
        log.info("job %s: %d chains done, max r_hat %s", ctx.job_id, chains, info.max_r_hat)

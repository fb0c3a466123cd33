"""Users' own models: load the stored source, then SVI (as built-in fits are run) or MCMC."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from db.jobs import get_job
from db.models import Dataset
from db.results import store_mcmc_results
from db.sources import load_source
from kiln.errors import UserError
from kiln.userdata import parse_user_data
from worker.run import run_svi_job
from worker.runtime import Runtime
from worker.sink import Sink

log = logging.getLogger(__name__)


def run_user_job(
    rt: Runtime,
    job_id: str,
    spec: dict[str, Any],
    source_id: str | None,
    dataset: Dataset | None,
    info: dict[str, Any],
    started: float,
) -> None:
    if not rt.settings.runs_user_code:
        raise UserError(
            f"worker {rt.name} does not run users' model files (KILN_ALLOW_USER_CODE is off);"
            " a fleet turns it on for workers that may run code from whoever submits jobs"
        )
    if source_id is None or dataset is None:
        raise UserError(f"job {job_id} has no stored model source or data")
    with rt.sessions() as session:
        source = load_source(session, source_id).content
    _, data = parse_user_data(dataset.content, dataset.name)
    if spec["method"] == "svi":
        _run_user_svi(rt, job_id, spec, source, data, info, started)
    else:
        _run_mcmc(rt, job_id, spec, source, data, info, started)


def _run_user_svi(
    rt: Runtime, job_id: str, spec: dict[str, Any], source: str, data: dict[str, Any],
    info: dict[str, Any], started: float,
) -> None:  # fmt: skip
    from inference.posterior import summarize_draws
    from inference.userfit import draw_sites, prepare_user_fit

    problem = prepare_user_fit(
        source, spec["model_file"], spec["model_function"], data, guide=spec["guide"],
        guide_function=spec.get("guide_function"), seed=spec["seed"], device=spec["device"],
    )  # fmt: skip
    info.update(problem.info)

    def summarize() -> tuple[list[Any], dict[str, np.ndarray]]:
        draws = draw_sites(
            problem.model, problem.guide, problem.kwargs, problem.latent_sites,
            spec["num_samples"],
        )  # fmt: skip
        return [summarize_draws(site, values) for site, values in draws.items()], draws

    run_svi_job(rt, job_id, spec, problem, info, started, summarize)


def _run_mcmc(
    rt: Runtime, job_id: str, spec: dict[str, Any], source: str, data: dict[str, Any],
    info: dict[str, Any], started: float,
) -> None:  # fmt: skip
    from inference.events import McmcFinished
    from inference.fit import resolve_device
    from inference.mcmc import run_mcmc
    from inference.posterior import summarize_draws
    from kiln.diagnostics import all_diagnostics, chain_summary

    sink = Sink(
        rt.sessions, job_id, worker=rt.name, lease_s=rt.settings.lease_s,
        flush_every_s=rt.settings.flush_every_s, info=info, db_retry_s=rt.settings.db_retry_s,
    )  # fmt: skip
    events = run_mcmc(
        source, spec["model_file"], spec["model_function"], data, method=spec["method"],
        warmup=spec["warmup"], samples=spec["samples"], chains=spec["chains"],
        seed=spec["seed"], target_accept=spec["target_accept"],
        max_tree_depth=spec["max_tree_depth"], num_steps=spec.get("num_steps"),
        jit=spec.get("jit", "auto") != "off", device=resolve_device(spec["device"]),
    )  # fmt: skip
    finished: McmcFinished | None = None
    try:
        for event in events:
            sink.add(event)
            if isinstance(event, McmcFinished):
                finished = event
    finally:
        events.close()  # a cancel or a lost lease stops the chains' processes too
    if finished is None:
        raise RuntimeError("the MCMC run ended without its draws")
    draws = finished.draws
    chains = spec["chains"]
    flat = {site: v.reshape(chains * v.shape[1], *v.shape[2:]) for site, v in draws.items()}
    sites = [summarize_draws(site, values) for site, values in flat.items()]
    diagnostics = all_diagnostics(draws)
    deterministic = set(getattr(finished, "deterministic", ()) or ())
    stored: dict[str, tuple[str, np.ndarray]] = {
        site: ("deterministic" if site in deterministic else "posterior", values)
        for site, values in flat.items()
    }
    for name, values in finished.stats.items():
        stored[name] = ("sample_stats", np.asarray(values).reshape(-1))
    per_chain = chain_summary(finished.stats, list(finished.chain_seconds))
    r_hats = [float(np.nanmax(d[0])) for d in diagnostics.values() if np.isfinite(d[0]).any()]
    info.update(
        method=spec["method"], chains=chains, warmup=spec["warmup"], samples=spec["samples"],
        jit=finished.jit, chain_seconds=[round(float(s), 3) for s in finished.chain_seconds],
        divergences=sum(int(c.get("divergences", 0)) for c in per_chain), per_chain=per_chain,
        max_r_hat=max(r_hats) if r_hats else None,
        fit_seconds=round(time.monotonic() - started, 3),
    )  # fmt: skip
    if finished.note:
        info["note"] = finished.note
    with rt.sessions() as session:
        store_mcmc_results(session, job_id, sites=sites, diagnostics=diagnostics, draws=stored)
        job = get_job(session, job_id)
        job.info = info
        job.step = job.total_steps
        session.commit()
    log.info("job %s: %d chains done, max r_hat %s", job_id, chains, info["max_r_hat"])

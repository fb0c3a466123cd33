"""Inside the sandbox: the request's job kind run by inference.usertasks, its events and
result written back as frames. Also the request's and the result's layout, which the worker
side (worker/sandbox/process.py) builds and reads."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import IO, Any

import numpy as np

from inference import usertasks as ut
from inference.events import Event
from inference.loglik import LogLik
from inference.mcmc_units import UnitOutcome, UnitRun, run_unit
from kiln.specs import (
    UserMcmcChainSpec,
    UserMcmcFitSpec,
    UserPredictSpec,
    UserSviFitSpec,
    parse_job_spec,
)
from kiln.until import parse_until
from kiln.userdata import parse_user_data
from worker.sandbox.messages import event_frame
from worker.sandbox.wire import Frame, WireError, as_bytes_array, write_frame


def run_task(request: Frame, out: IO[bytes], before_result: Callable[[], None]) -> None:
    header = request.header
    spec = parse_job_spec(header["spec"])
    if isinstance(spec, UserSviFitSpec):
        result_header, arrays = _drive(_svi(spec, request), out, _svi_result)
    elif isinstance(spec, UserMcmcChainSpec):
        result_header, arrays = _drive(_unit(spec, request), out, _unit_result)
    elif isinstance(spec, UserPredictSpec):
        result_header, arrays = _drive(_predict(spec, request), out, _predict_result)
    else:
        raise WireError(f"a {type(spec).__name__} does not run in the sandbox")
    before_result()
    write_frame(out, {"type": "result", **result_header}, arrays)


def _drive(
    run: Generator[Event, None, Any], out: IO[bytes], result: Any
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    while True:
        try:
            event = next(run)
        except StopIteration as stop:
            return result(stop.value)  # type: ignore[no-any-return]
        write_frame(out, *event_frame(event))


def _data(request: Frame, name: str) -> dict[str, Any]:
    content = request.blob(name)
    if content is None:
        raise WireError(f"the request has no `{name}`")
    _, values = parse_user_data(content, str(request.header[f"{name}_name"]))
    return dict(values)


def _svi(spec: UserSviFitSpec, request: Frame) -> Generator[Event, None, ut.SviOutcome]:
    h = request.header
    assert spec.seed is not None
    return ut.svi_fit(
        ut.SviRun(
            source=h["source"],
            filename=spec.model_file,
            function=spec.model_function,
            data=_data(request, "data"),
            guide=spec.guide,
            guide_function=spec.guide_function,
            seed=spec.seed,
            device=spec.device,
            steps=spec.steps,
            lr=spec.lr,
            optim=spec.optim,
            elbo=spec.elbo,
            num_samples=spec.num_samples,
            checkpoint_every_steps=int(h["checkpoint_every_steps"]),
            checkpoint_every_s=float(h["checkpoint_every_s"]),
            resume=request.blob("resume"),
        )  # fmt: skip
    )


def _svi_result(o: ut.SviOutcome) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {"state": as_bytes_array(o.state)}
    arrays.update({f"param/{k}": v for k, v in o.guide_params.items()})
    arrays.update({f"draw/{k}": v for k, v in o.draws.items()})
    sites = {"latent_sites": o.latent_sites, "deterministic_sites": o.deterministic_sites}
    header, loglik = loglik_result(o.loglik)
    arrays.update(loglik)
    return {"sites": sites, "order": list(o.draws), **header}, arrays


def loglik_result(ll: LogLik) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A fit's pointwise log-likelihood as `loglik/SITE` and `observed/SITE` arrays, the draws
    used as `loglik_draws`, and the header's `loglik` facts (plate dims by site, a note)."""
    arrays: dict[str, np.ndarray] = {f"loglik/{k}": v for k, v in ll.values.items()}
    arrays.update({f"observed/{k}": v for k, v in ll.observed.items()})
    if ll.values:
        arrays["loglik_draws"] = ll.draws
    facts = {"dims": ll.dims, "note": ll.note, "vectorized": ll.vectorized}
    return {"loglik": facts}, arrays


def _unit(spec: UserMcmcChainSpec, request: Frame) -> Generator[Event, None, UnitOutcome]:
    h = request.header
    job = parse_job_spec(h["fit_spec"])
    if not isinstance(job, UserMcmcFitSpec) or job.seed is None:
        raise WireError("a chain unit's request names no MCMC job")
    return run_unit(
        UnitRun(
            source=h["source"],
            filename=job.model_file,
            function=job.model_function,
            data=_data(request, "data"),
            chains=tuple(range(spec.first, spec.first + spec.count)),
            job_chains=job.chains,
            method=job.method,
            warmup=job.warmup,
            samples=job.draws_cap,
            seed=job.seed,
            target_accept=job.target_accept,
            max_tree_depth=job.max_tree_depth,
            num_steps=job.num_steps,
            jit=job.jit != "off",
            inductor=None if job.jit == "auto" else job.jit == "inductor",
            device=str(h["device"]),
            keep_warmup=job.keep_warmup,
            until=parse_until(job.until) if job.until is not None else None,
            check_every=job.check_every,
            checkpoint_every_draws=int(h["checkpoint_every_draws"]),
            checkpoint_every_s=float(h["checkpoint_every_s"]),
            resume=request.blob("resume"),
        )  # fmt: skip
    )


def _unit_result(o: UnitOutcome) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    header, arrays = loglik_result(o.loglik)
    return {**header, "facts": o.facts}, arrays


def _predict(spec: UserPredictSpec, request: Frame) -> Generator[Event, None, ut.PredictOutcome]:
    h = request.header
    fit = parse_job_spec(h["fit_spec"])
    assert spec.seed is not None and isinstance(fit, UserSviFitSpec | UserMcmcFitSpec)
    fit_data = _data(request, "fit_data")
    data = _data(request, "data") if request.blob("data") is not None else fit_data
    svi = isinstance(fit, UserSviFitSpec)
    return ut.predict(
        ut.PredictRun(
            source=h["source"],
            filename=fit.model_file,
            function=fit.model_function,
            fit_data=fit_data,
            data=data,
            num_samples=spec.num_samples,
            seed=spec.seed,
            device=str(h["device"]),
            guide=fit.guide if isinstance(fit, UserSviFitSpec) else "AutoNormal",
            guide_function=fit.guide_function if isinstance(fit, UserSviFitSpec) else None,
            state=request.blob("state") if svi else None,
            draws=request.group("draw"),
        )  # fmt: skip
    )


def _predict_result(o: ut.PredictOutcome) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    arrays = {f"site/{k}": v for k, (_, v) in o.sites.items()}
    arrays.update({f"observed/{k}": v for k, v in o.observed.items()})
    kinds = {k: kind for k, (kind, _) in o.sites.items()}
    header, loglik = loglik_result(o.loglik)  # its `observed/` arrays are the same values
    arrays.update(loglik)
    return {"kinds": kinds, "order": list(o.sites), "vectorized": o.vectorized, **header}, arrays

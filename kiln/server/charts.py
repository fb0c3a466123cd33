"""Chart data as JSON, computed from a job's stored draws, for the dashboard's plots (drawn in
the browser) and for anyone else: a site's histogram, an MCMC site's trace by chain, and the
predictive figure's bands. Each resolves the job among those the caller may see (else 404)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request

from kiln.errors import NotFound, SpecError, UserError
from kiln.server.auth import Caller, Identity
from kiln.server.jobs import visible_job
from kiln.server.problems import PROBLEM_RESPONSES
from kiln.server.state import state_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from kiln.export import JobResults

router = APIRouter(responses=PROBLEM_RESPONSES, tags=["charts"])
MAX_ROWS = 5000  # a predictive panel's points at most (evenly chosen along x)
Site = Annotated[str, Query(min_length=1, max_length=255, description="A stored site's name")]
Index = Annotated[int, Query(ge=0, le=2**40, description="The element (flat index in the "
                             "site's shape; 0 for a scalar site)")]  # fmt: skip


def _element(session: Session, job_id: str, site: str, index: int) -> tuple[np.ndarray, str]:
    """The draws of one element of a site, (num_samples,), and its label (`theta[3]`)."""
    from db.results import get_draws
    from kiln.server.web.queries import element_label

    found = get_draws(session, job_id, kind=None, sites=[site])
    if site not in found:
        raise NotFound(f"job {job_id} has no site `{site}`")
    draws = np.asarray(found[site])
    shape = draws.shape[1:]
    size = math.prod(shape)
    if index >= size:
        raise SpecError(f"index: site `{site}` has {size} elements (shape {list(shape)}); give"
                        f" an index below {size} (got {index})", field="index")  # fmt: skip
    return draws.reshape(len(draws), -1)[:, index].astype(float), element_label(site, shape, index)


@router.get("/jobs/{job_id}/charts/histogram", summary="A site's posterior as a histogram")
def histogram(
    request: Request, identity: Caller, job_id: str, site: Site, index: Index = 0,
    bins: Annotated[int, Query(ge=1, le=200)] = 30,
) -> dict[str, Any]:  # fmt: skip
    """`bins` equal bins over the element's finite draws: `edges` (bins + 1) and `counts`,
    with its mean, sd and 5/50/95% quantiles (null when it has no finite draw)."""
    with state_of(request).sessions() as session:
        job = visible_job(session, identity, job_id)
        values, label = _element(session, job.id, site, index)
    finite = values[np.isfinite(values)]
    found: dict[str, Any] = {"edges": [], "counts": [], "mean": None, "sd": None,
                             "q05": None, "q50": None, "q95": None}  # fmt: skip
    if finite.size:
        counts, edges = np.histogram(finite, bins=bins)
        quantiles = np.quantile(finite, (0.05, 0.5, 0.95))
        found.update(edges=[float(e) for e in edges], counts=[int(c) for c in counts],
                     mean=float(finite.mean()), sd=float(finite.std()),
                     **{k: float(q) for k, q in zip(("q05", "q50", "q95"), quantiles,
                                                    strict=True)})  # fmt: skip
    return {"id": job.id, "site": site, "index": index, "label": label,
            "draws": int(values.size), "finite": int(finite.size), **found}  # fmt: skip


@router.get("/jobs/{job_id}/charts/trace", summary="An MCMC site's draws by chain")
def trace(
    request: Request, identity: Caller, job_id: str, site: Site, index: Index = 0,
    max_points: Annotated[int, Query(ge=10, le=100_000)] = 1000,
) -> dict[str, Any]:  # fmt: skip
    """Per chain, the draw numbers and values of the element, every `stride`-th draw so that
    a chain has at most `max_points`. 422 for a job that is not an MCMC fit."""
    with state_of(request).sessions() as session:
        job = visible_job(session, identity, job_id)
        if job.spec.get("kind") != "user_mcmc_fit":
            raise UserError(f"job {job.id} is not an MCMC fit; it has no chains to trace")
        values, label = _element(session, job.id, site, index)
        chains = max(1, int((job.info or {}).get("chains") or 1))
    per_chain = len(values) // chains
    stride = max(1, math.ceil(per_chain / max_points))
    draws = list(range(0, per_chain, stride))
    return {
        "id": job.id, "site": site, "index": index, "label": label, "stride": stride,
        "chains": [{"chain": c, "draw": draws,
                    "value": [_float(v) for v in values[c * per_chain:(c + 1) * per_chain:stride]]}
                   for c in range(chains)],
    }  # fmt: skip


@router.get("/jobs/{job_id}/charts/predictive", summary="The predictive figure's data")
def predictive(request: Request, identity: Caller, job_id: str) -> dict[str, Any]:
    """A predict job's figure (a fit's: of its latest prediction of its own rows), as data.

    `kind` says which: `bands` (a regression: one panel per value of its 0/1 term, each with x,
    observed y, 5/50/95% of the mean and 5/95% of obs by row, sorted by x), `forecast` (by day:
    observed, the predictive mean and its 5/95% band) or `image` (a figure only a PNG shows,
    at `src`: digits, reconstructions, HMM states). 422 for a job without one."""
    from db.jobs import get_job
    from kiln.export import load_results

    with state_of(request).sessions() as session:
        job = visible_job(session, identity, job_id)
        shown = _prediction_of(session, identity, job)
        fit = job if job.kind == "fit" else get_job(session, str(job.spec["from_job"]))
        model = str(fit.spec.get("model", ""))
        library = fit.spec.get("kind") == "library_fit"
        base = {"id": job.id, "prediction": shown}
        if library and not model.startswith("forecast-"):  # a figure only a PNG shows
            return {**base, "kind": "image", "src": f"/jobs/{shown}/plot?kind=predictive",
                    "title": f"job {shown}: {model}"}  # fmt: skip
        r = load_results(session, shown)
    if library:
        sites = {**r.item_sites, **r.data_sites}
        if "forecast" not in sites:
            raise UserError(f"job {shown} stored no forecast")
        return {**base, **_forecast(sites)}
    if not {"mean", "obs"} <= set(r.row_sites) or r.X is None or r.y is None:
        raise UserError(f"job {r.job_id} has no predictive figure (a {model} model's draws"
                        " are read with `jobs samples`)")  # fmt: skip
    return {**base, **_bands(r)}


def _prediction_of(session: Session, identity: Identity, job: Any) -> str:
    """The job whose draws the figure shows: a predict job itself, a fit's latest prediction."""
    from db.jobs import latest_prediction

    if job.status != "succeeded":
        raise UserError(f"job {job.id} is {job.status}; it has no results to read (yet)")
    if job.kind == "predict":
        return str(job.id)
    latest = latest_prediction(session, job.id, identity.owner_filter)
    if job.kind != "fit" or latest is None:
        raise UserError(f"job {job.id} has no prediction to draw; run `jobs submit predict"
                        f" --from {job.id} --wait`")  # fmt: skip
    return latest


def _bands(r: JobResults) -> dict[str, Any]:
    from kiln.plots import panels_for

    assert r.X is not None and r.y is not None
    mean, obs = np.asarray(r.row_sites["mean"], float), np.asarray(r.row_sites["obs"], float)
    m_lo, m_mid, m_hi = np.quantile(mean, (0.05, 0.5, 0.95), axis=0)
    o_lo, o_hi = np.quantile(obs, (0.05, 0.95), axis=0)
    x_name, x, groups = panels_for(r.X, r.terms)
    if not x_name:
        x_name, x = "posterior mean of the regression line", mean.mean(axis=0)
    y = np.asarray(r.y, float)
    panels = []
    for label, rows in groups:
        where = np.flatnonzero(rows)
        where = where[np.argsort(x[where], kind="stable")]
        if len(where) > MAX_ROWS:
            where = where[np.linspace(0, len(where) - 1, MAX_ROWS).round().astype(int)]
        known = np.isfinite(y[where])
        inside = (y[where] >= o_lo[where]) & (y[where] <= o_hi[where])
        panels.append({
            "label": label, "rows": int(rows.sum()),
            "inside_90": float(inside[known].mean()) if known.any() else None,
            **{name: [_float(v) for v in values[where]] for name, values in (
                ("x", x), ("y", y), ("mean_lo", m_lo), ("mean_mid", m_mid), ("mean_hi", m_hi),
                ("obs_lo", o_lo), ("obs_hi", o_hi))},
        })  # fmt: skip
    return {"kind": "bands", "x_label": x_name, "y_label": r.response, "panels": panels,
            "title": f"{r.fit_spec.get('formula') or r.fit_spec.get('model')}"}  # fmt: skip


def _forecast(sites: dict[str, np.ndarray]) -> dict[str, Any]:
    days = np.asarray(sites["__day__"]).reshape(-1)
    draws = np.asarray(sites["forecast"], float).reshape(-1, days.size)
    lo, hi = np.percentile(draws, (5, 95), axis=0)
    observed = np.asarray(sites["__y__"], float).reshape(-1)
    return {"kind": "forecast", "x_label": "date", "y_label": "% change from the day before",
            "days": [int(d) for d in days], "observed": [_float(v) for v in observed],
            "mean": [_float(v) for v in draws.mean(axis=0)],
            "lo": [_float(v) for v in lo], "hi": [_float(v) for v in hi],
            "title": "held-out days: observed and the 90% predictive band"}  # fmt: skip


def _float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None

"""The dashboard's pages: jobs (/), a job (/ui/jobs/{id}), a sweep (/ui/sweeps/{id}) and the
fleet (/ui/fleet), rendered here from the db functions the API's routes use, with the caller's
visibility (another user's job or sweep is a 404 page). Their live parts (status, progress, the
loss curve, charts) are the page's scripts calling the JSON API with the same cookie."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kiln.errors import NotFound
from kiln.server.auth import Caller
from kiln.server.gate import CSRF_COOKIE, csrf_matches
from kiln.server.jobs import visible_job
from kiln.server.state import state_of
from kiln.server.web.queries import JobFilters, job_page, metric_names
from kiln.server.web.render import PAGE_HEADERS, final_loss, job_duration, page

router = APIRouter(include_in_schema=False)
Status = Literal["waiting", "queued", "running", "succeeded", "failed", "cancelled"]
Kind = Literal["fit", "predict", "batch"]
PAGE_SIZES = (25, 50, 100, 200)
MAX_POINTS = 2000  # a loss curve's points at most, as the page first loads it
RECENT_SWEEPS = 5


def _empty(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def not_found(request: Request, what: str) -> HTMLResponse:
    return page(request, "error.html", 404, title="Not found", message=f"{what} not found.")


@router.get("/", response_class=HTMLResponse)
def jobs_page(
    request: Request, identity: Caller,
    status: Annotated[Status | Literal[""] | None, Query()] = None,
    kind: Annotated[Kind | Literal[""] | None, Query()] = None,
    model: Annotated[str | None, Query(max_length=255)] = None,
    owner: Annotated[str | None, Query(max_length=255)] = None,
    text: Annotated[str | None, Query(max_length=64)] = None,
    page_no: Annotated[int, Query(alias="page", ge=1, le=10**9)] = 1,
    size: Annotated[int, Query(ge=10, le=200)] = 50,
) -> HTMLResponse:  # fmt: skip
    """The jobs the caller may see, newest first, a page at a time, and the newest sweeps."""
    from db.sweeps import list_sweeps

    filters = JobFilters(status=status or None, kind=kind or None, model=_empty(model),
                         owner=_empty(owner), text=_empty(text))  # fmt: skip
    mine = identity.owner_filter
    with state_of(request).sessions() as session:
        rows: Sequence[Any] = []
        total = 0  # another user's jobs: none this caller may see
        if mine is None or filters.owner in (None, mine):
            rows, total = job_page(session, filters, mine, size, (page_no - 1) * size)
        jobs = [_row(job) for job in rows]
        sweeps = [
            {"id": s.id, "status": state, "model": s.model, "members": s.members,
             "counts": counts, "created_at": s.created_at, "owner": s.owner}
            for s, state, counts in list_sweeps(session, RECENT_SWEEPS, mine)
        ] if page_no == 1 and not filters.query() else []  # fmt: skip
    pages = max(1, math.ceil(total / size))
    return page(request, "jobs.html", title="Jobs", jobs=jobs, total=total, filters=filters,
                page_no=page_no, pages=pages, size=size, sizes=PAGE_SIZES, sweeps=sweeps,
                first=(page_no - 1) * size + 1 if jobs else 0,
                last=(page_no - 1) * size + len(jobs))  # fmt: skip


def _row(job: Any) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "model": job.model, "spec": job.spec,
            "owner": job.owner, "status": job.status, "step": job.step,
            "total": job.total_steps, "queue": job.queue, "created_at": job.created_at,
            "duration": job_duration(job), "final_loss": final_loss(job),
            "sweep_id": job.sweep_id, "member": job.member}  # fmt: skip


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page_(request: Request, identity: Caller, job_id: str) -> HTMLResponse:
    """One job: its spec, status and attempts, live progress and loss curve, its posterior,
    histograms, traces, predictive figure and downloads."""
    from db.claims import attempts_of
    from db.jobs import latest_prediction
    from db.results import get_diagnostics, get_params
    from kiln.server.web.queries import posterior_rows, site_elements

    with state_of(request).sessions() as session:
        try:
            job = visible_job(session, identity, job_id)
        except NotFound:
            return not_found(request, f"Job {job_id}")
        attempts = attempts_of(session, job.id)
        sites = get_params(session, job.id) if job.status == "succeeded" else []
        diagnostics = get_diagnostics(session, job.id) if sites else {}
        metrics = metric_names(session, job.id) if job.kind == "fit" else []
        spec_kind = str(job.spec.get("kind", ""))
        mcmc = spec_kind == "user_mcmc_fit"
        prediction = None
        if job.status == "succeeded" and job.kind == "fit":
            prediction = latest_prediction(session, job.id, identity.owner_filter)
        fit = job.spec.get("from_job") if job.kind == "predict" else None
    charts_predictive = job.status == "succeeded" and (
        job.kind == "predict" or prediction is not None)  # fmt: skip
    has_losses = job.kind == "fit" and not mcmc
    every = max(1, math.ceil(max(job.step, 1) / MAX_POINTS))
    return page(
        request, "job.html", title=f"Job {job.id}", job=job, attempts=attempts, mcmc=mcmc,
        duration=job_duration(job), final_loss=final_loss(job),
        posterior=posterior_rows(sites, diagnostics), elements=site_elements(sites),
        metrics=metrics, has_losses=has_losses, every=every, prediction=prediction, fit=fit,
        charts_predictive=charts_predictive,
        may_cancel=identity.may_submit and job.status not in ("succeeded", "failed",
                                                              "cancelled"),
    )  # fmt: skip


@router.post("/ui/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel_form(request: Request, identity: Caller, job_id: str,
                csrf: Annotated[str, Form(max_length=128)] = "") -> Response:  # fmt: skip
    """The cancel button: a form with the CSRF value; back to the job's page."""
    from db.jobs import request_cancel

    if not csrf_matches(request.cookies.get(CSRF_COOKIE), csrf):
        return page(request, "error.html", 403, title="Refused",
                    message="That form expired (its CSRF value does not match); reload the"
                            " page and try again.")  # fmt: skip
    if not identity.may_submit:
        return page(request, "error.html", 403, title="Refused",
                    message=f"Role `{identity.role}` may only read; cancelling needs role"
                            " `submit` or `admin`.")  # fmt: skip
    with state_of(request).sessions() as session:
        try:
            job = visible_job(session, identity, job_id)
        except NotFound:
            return not_found(request, f"Job {job_id}")
        request_cancel(session, job.id)
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303, headers=PAGE_HEADERS)


@router.get("/ui/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(request: Request, identity: Caller, sweep_id: str) -> HTMLResponse:
    """A sweep's members with their settings and final figures; a chosen site's posterior
    mean against a chosen setting; each grid point summarised across seeds."""
    from db.sweeps import view_sweep

    with state_of(request).sessions() as session:
        try:
            view = view_sweep(session, sweep_id, True, identity.owner_filter)
        except NotFound:
            return not_found(request, f"Sweep {sweep_id}")
    grid = list((view.spec.get("grid") or {}).keys())
    keys: list[str] = []
    sites: list[str] = []
    for m in view.members:
        keys.extend(k for k in m.settings if k not in keys)
        sites.extend(s for s in m.params if s not in sites)
    settings = grid + [k for k in keys if k not in grid]
    done = sum(view.counts.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
    return page(request, "sweep.html", title=f"Sweep {view.id}", sweep=view,
                members=[asdict(m) for m in view.members], settings=settings, grid=grid,
                sites=sites, done=done, total=sum(view.counts.values()))  # fmt: skip


@router.get("/ui/fleet", response_class=HTMLResponse)
def fleet_page(request: Request, identity: Caller) -> HTMLResponse:
    """Live workers (queues, device, running job, heartbeat age), queue depths, jobs by
    status; the page refreshes them from GET /workers and /stats."""
    from db.stats import job_counts, oldest_queued
    from db.workers import worker_views
    from kiln.server.fleet import worker_docs

    state = state_of(request)
    with state.sessions() as session:
        views = worker_views(session, state.settings.worker_alive_s)
        workers = worker_docs(session, identity, views)
        counts = job_counts(session)
        oldest = oldest_queued(session)
    statuses = ("waiting", "queued", "running", "succeeded", "failed", "cancelled")
    by_status = {s: sum(c.get(s, 0) for c in counts.values()) for s in statuses}
    return page(request, "fleet.html", title="Fleet", workers=workers, counts=counts,
                oldest=oldest, by_status=by_status, statuses=statuses)  # fmt: skip

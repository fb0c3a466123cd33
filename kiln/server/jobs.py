"""Routes that read jobs and cancel them: list, show, losses, params, cancel, live workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from kiln.server.auth import Caller, Submitter
from kiln.server.state import state_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from db.models import Job

router = APIRouter(tags=["jobs"])
Status = Literal["waiting", "queued", "running", "succeeded", "failed", "cancelled"]
MAX_PAGE = 1000


def job_document(session: Session, job: Job, attempts: bool = True) -> dict[str, Any]:
    """What `jobs show --json` prints, plus the sweep and the owner."""
    from db.claims import attempts_of
    from kiln.render import job_to_dict

    tries = attempts_of(session, job.id) if attempts else []
    return {**job_to_dict(job, tries), "sweep_id": job.sweep_id, "owner": job.owner}


def visible_job(session: Session, identity: Any, job_id: str) -> Job:
    """The job by id or prefix, among those the caller may see (else NotFound: 404)."""
    from db.jobs import get_job

    return get_job(session, job_id, owner=identity.owner_filter)


@router.get("/jobs", summary="List jobs, newest first")
def list_jobs(
    request: Request, identity: Caller, status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    """The jobs the caller may see (a `submit` user: their own), newest first."""
    from db.jobs import list_jobs as rows

    with state_of(request).sessions() as session:
        found = rows(session, status, limit, offset, owner=identity.owner_filter)
        return [job_document(session, job, attempts=False) for job in found]


@router.get("/jobs/{job_id}", summary="One job: status, progress, spec, attempts, error")
def show_job(request: Request, identity: Caller, job_id: str) -> dict[str, Any]:
    with state_of(request).sessions() as session:
        return job_document(session, visible_job(session, identity, job_id))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job")
def cancel_job(request: Request, identity: Submitter, job_id: str) -> dict[str, Any]:
    """A queued job never starts; a running one stops at its next flush."""
    from db.jobs import request_cancel

    with state_of(request).sessions() as session:
        job = visible_job(session, identity, job_id)
        status = request_cancel(session, job.id)
        return {"id": job.id, "status": status, "cancel_requested": True}


@router.get("/jobs/{job_id}/losses", summary="The loss of every step (thinned, or the tail)")
def losses(
    request: Request, identity: Caller, job_id: str,
    tail: Annotated[int | None, Query(ge=1, le=10**9)] = None,
    every: Annotated[int, Query(ge=1, le=10**12)] = 1,
) -> dict[str, Any]:  # fmt: skip
    """Rows `[step, loss]` by step: steps that are multiples of `every`, the last `tail`."""
    from db.losses import get_loss_page

    with state_of(request).sessions() as session:
        job = visible_job(session, identity, job_id)
        rows = get_loss_page(session, job.id, every=every, tail=tail)
        return {"id": job.id, "columns": ["step", "loss"], "rows": rows}


@router.get("/jobs/{job_id}/params", summary="Posterior summary of each latent site")
def params(request: Request, identity: Caller, job_id: str) -> dict[str, Any]:
    """Per site: shape, dtype and mean, sd, q05, q50, q95 as nested lists (null: not finite)."""
    from db.results import get_params
    from kiln.records import STATS

    with state_of(request).sessions() as session:
        job = visible_job(session, identity, job_id)
        sites = get_params(session, job.id)
        return {
            "id": job.id, "status": job.status,
            "sites": [{"site": s.site, "shape": list(s.shape), "dtype": str(s.mean.dtype),
                       **{k: getattr(s, k).tolist() for k in STATS}} for s in sites],
        }  # fmt: skip


@router.get("/workers/live", tags=["fleet"], summary="Names of the live workers")
def live_workers(request: Request, identity: Caller, queue: str | None = None) -> dict[str, Any]:
    """The live workers (serving `queue`, if given): what `--wait` checks before it warns."""
    from db.workers import live_workers as alive

    state = state_of(request)
    with state.sessions() as session:
        names = [w.name for w in alive(session, queue, state.settings.worker_alive_s)]
        return {"queue": queue, "workers": names}

"""Routes for sweeps (submit, list, show, cancel), the fleet (workers, stats) and tokens.

A `submit` user sees and cancels their own sweeps only (another's is not found, as for jobs),
and sees every worker but not which job of someone else's it runs. Tokens are an admin's.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from kiln.labels import check_tags, labels_of
from kiln.server.auth import Caller, Identity, Submitter
from kiln.server.jobs import TagChange
from kiln.server.problems import PROBLEM_RESPONSES, Refused
from kiln.server.state import state_of
from kiln.server.submit import MAX_NAME, Name, Tags, json_object, read_upload

router = APIRouter(responses=PROBLEM_RESPONSES)
MAX_PAGE = 1000


@router.post("/sweeps", status_code=201, tags=["sweeps"], summary="Submit a sweep")
async def submit_sweep(
    request: Request, identity: Submitter,
    data: Annotated[UploadFile, File(description="The CSV every member fits")],
    spec: Annotated[str, Form(description='The sweep as JSON: {"base": {"model": "linreg",'
                              ' "formula": ...}, "grid": {"lr": [...]}, "seeds": N, ...}')],
    name: Name = None, tag: Tags = None,
) -> dict[str, Any]:  # fmt: skip
    """Many linreg fits of one data set: a grid of settings x seeds x resamples x groups, as
    `jobs submit sweep` (kiln.sweepspec.SweepSpec). Members count against the user's cap."""
    state = state_of(request)
    table = await read_upload(data, "data")
    assert table is not None
    document = json_object(spec, "spec")
    labels = labels_of(name, tag or [])
    done = await run_in_threadpool(state.client.submit_sweep_spec, document, table,
                                   identity.owner, labels)  # fmt: skip
    return {"id": done.sweep_id, "members": done.members, "batches": done.batches,
            "queue": done.queue, "packed": done.packed, "unpacked": done.unpacked,
            "status": "queued"}  # fmt: skip


@router.get("/sweeps", tags=["sweeps"], summary="List sweeps, newest first")
def list_sweeps(
    request: Request, identity: Caller,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    from db.sweeps import list_sweeps as rows

    with state_of(request).sessions() as session:
        return [
            {"id": s.id, "status": status, "model": s.model, "members": s.members,
             "batches": s.batches, "counts": counts, "created_at": s.created_at,
             "owner": s.owner}
            for s, status, counts in rows(session, limit, identity.owner_filter, offset)
        ]  # fmt: skip


@router.get("/sweeps/{sweep_id}", tags=["sweeps"], summary="A sweep, its batches and members")
def show_sweep(request: Request, identity: Caller, sweep_id: str,
               members: bool = True) -> dict[str, Any]:  # fmt: skip
    """What `jobs sweep show --json` prints: status, counts, batches, one row per member."""
    from db.sweeps import view_sweep

    with state_of(request).sessions() as session:
        return asdict(view_sweep(session, sweep_id, members, identity.owner_filter))


@router.get(
    "/sweeps/{sweep_id}/summary",
    tags=["sweeps"],
    summary="A sweep's members grouped by settings: mean and sd per group",
)
def summarise_sweep(
    request: Request, identity: Caller, sweep_id: str,
    by: Annotated[str, Query(max_length=1000, description="Settings to group by: lr,guide")],
) -> dict[str, Any]:  # fmt: skip
    """What `jobs sweep show ID --by KEYS --json` prints: per group of members with the same
    values of KEYS, the member and succeeded counts and the mean and sd of the final loss
    and of each site's posterior mean (kiln.sweepsummary)."""
    from db.sweeps import view_sweep
    from kiln.sweepsummary import parse_by
    from kiln.sweepsummary import summarise_sweep as summarise

    keys = parse_by(by)
    with state_of(request).sessions() as session:
        view = view_sweep(session, sweep_id, True, identity.owner_filter)
    return summarise(view, keys).to_dict()


@router.post("/sweeps/{sweep_id}/cancel", tags=["sweeps"], summary="Cancel a sweep")
def cancel_sweep(request: Request, identity: Submitter, sweep_id: str) -> dict[str, Any]:
    """Cancels every member not yet ended; `running`: how many running jobs were asked to stop."""
    from db.sweeps import cancel_sweep as cancel
    from db.sweeps import get_sweep

    with state_of(request).sessions() as session:
        sweep = get_sweep(session, sweep_id, identity.owner_filter)
        return {"id": sweep.id, "running": cancel(session, sweep.id)}


@router.post("/sweeps/{sweep_id}/tags", tags=["sweeps"], summary="Set or remove a sweep's tags")
def tag_sweep(request: Request, identity: Submitter, sweep_id: str,
              change: TagChange) -> dict[str, Any]:  # fmt: skip
    """The sweep's tags after the change; every member's tags change the same way."""
    from db.labels import retag_sweep
    from db.sweeps import get_sweep

    changes = check_tags(change.set)
    with state_of(request).sessions() as session:
        sweep = get_sweep(session, sweep_id, identity.owner_filter)
        return {"id": sweep.id, "tags": retag_sweep(session, sweep, changes, change.remove)}


@router.get("/workers", tags=["fleet"], summary="Workers and the job each runs")
def workers(request: Request, identity: Caller, all: bool = False) -> list[dict[str, Any]]:
    """Live workers (all: stopped and dead ones too), newest heartbeat first. A `submit` user
    sees which job a worker runs only when it is their own."""
    from db.workers import worker_views

    state = state_of(request)
    with state.sessions() as session:
        views = worker_views(session, state.settings.worker_alive_s, all)
        return worker_docs(session, identity, views)


@router.get("/stats", tags=["fleet"], summary="Jobs by queue and status, live workers")
def stats(request: Request, identity: Caller) -> dict[str, Any]:
    """Counts by queue and status (every user's jobs: counts only), the oldest queued job's
    creation time by queue, and the live workers."""
    from db.stats import job_counts, oldest_queued
    from db.workers import worker_views

    state = state_of(request)
    with state.sessions() as session:
        views = worker_views(session, state.settings.worker_alive_s)
        return {"counts": job_counts(session), "oldest_queued": oldest_queued(session),
                "workers": worker_docs(session, identity, views)}  # fmt: skip


def worker_docs(session: Any, identity: Identity, views: list[Any]) -> list[dict[str, Any]]:
    """The workers as documents; the job a worker runs is named only when the caller may see
    it (for a `submit` user: their own), else "(another user's job)"."""
    from sqlalchemy import select

    from db.models import Job

    running = [v.running for v in views if v.running]
    visible = set(running)
    if identity.owner_filter is not None and running:
        query = select(Job.id).where(Job.id.in_(running), Job.owner == identity.owner_filter)
        visible = set(session.scalars(query))
    docs = [asdict(v) for v in views]
    for doc in docs:
        if doc["running"] is not None and doc["running"] not in visible:
            doc["running"], doc["progress"] = "(another user's job)", None
    return docs


# -- tokens (admin) ------------------------------------------------------------------------


def admin(identity: Caller) -> Identity:
    if identity.role != "admin":
        raise Refused(403, f"role `{identity.role}`: tokens are managed by an admin")
    return identity


Admin = Annotated[Identity, Depends(admin)]


@router.post("/tokens", status_code=201, tags=["tokens"], summary="Create a token (admin)")
def create_token(
    request: Request, identity: Admin,
    user: Annotated[str, Form(min_length=1, max_length=MAX_NAME)],
    role: Annotated[Literal["read", "submit", "admin"], Form()] = "submit",
    max_unfinished: Annotated[int | None, Form(ge=1, le=2**40)] = None,
    max_upload_mb: Annotated[int | None, Form(ge=1, le=2**20)] = None,
) -> dict[str, Any]:  # fmt: skip
    """A new token; the response holds it, once (only its hash is stored)."""
    from db.tokens import create_token as create

    upload = max_upload_mb * 2**20 if max_upload_mb is not None else None
    with state_of(request).sessions() as session:
        view, token = create(session, user, role, max_unfinished=max_unfinished,
                             max_upload_bytes=upload)  # fmt: skip
    return {**asdict(view), "token": token}


@router.get("/tokens", tags=["tokens"], summary="Every token, never its secret (admin)")
def list_tokens(request: Request, identity: Admin) -> list[dict[str, Any]]:
    from db.tokens import list_tokens as rows

    with state_of(request).sessions() as session:
        return [asdict(v) for v in rows(session)]


@router.post("/tokens/{token_id}/revoke", tags=["tokens"], summary="Revoke a token (admin)")
def revoke_token(request: Request, identity: Admin, token_id: str) -> dict[str, Any]:
    from db.tokens import revoke_token as revoke

    with state_of(request).sessions() as session:
        return asdict(revoke(session, token_id[:64]))

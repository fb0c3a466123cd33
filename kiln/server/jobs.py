"""Routes that read jobs and cancel them: list, show, losses, params, cancel, live workers, and
a job's progress as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from kiln.errors import SpecError
from kiln.labels import MAX_TAG_KEY_CHARS, MAX_TAGS, check_tags
from kiln.query import MAX_QUERY_CHARS
from kiln.server.auth import Caller, Submitter
from kiln.server.problems import PROBLEM_RESPONSES
from kiln.server.state import state_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from db.models import Job

router = APIRouter(responses=PROBLEM_RESPONSES, tags=["jobs"])
Status = Literal["waiting", "queued", "running", "succeeded", "failed", "cancelled"]
WorkerQueue = Literal["cpu", "gpu", "cpu.user", "gpu.user"]  # scheduler.routing.QUEUES
MAX_PAGE = 1000
EVENT_LOSSES = 1000  # loss rows per `losses` event at most (a backlog is thinned)
KEEPALIVE_S = 15.0


def job_document(session: Session, job: Job, attempts: bool = True,
                 tags: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """What `jobs show --json` prints, plus the sweep and the owner. `tags`: the job's, when
    read already for a page of jobs (db.labels.tags_of); else read here."""
    from db.claims import attempts_of
    from db.labels import tags_of
    from kiln.reader import job_record
    from kiln.render import job_to_dict

    tries = attempts_of(session, job.id) if attempts else []
    if tags is None:
        tags = tags_of(session, [job.id]).get(job.id, {})
    record = job_record(job, tags)
    return {**job_to_dict(record, tries), "sweep_id": job.sweep_id, "owner": job.owner}


def visible_job(session: Session, identity: Any, job_id: str) -> Job:
    """The job by id or prefix, among those the caller may see (else NotFound: 404)."""
    from db.jobs import get_job

    return get_job(session, job_id, owner=identity.owner_filter)


@router.get("/jobs", summary="List jobs, newest first")
def list_jobs(
    request: Request, identity: Caller, status: Status | None = None,
    kind: Literal["fit", "predict", "batch"] | None = None,
    model: Annotated[str | None, Query(max_length=255)] = None,
    owner: Annotated[str | None, Query(max_length=255)] = None,
    sweep: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    where: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS)] = None,
    order_by: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS)] = None,
    columns: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS)] = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The jobs the caller may see (a `submit` user: their own), newest first, with this
    status, kind, model (`linreg`, `hmm`, `eight_schools.py:model`...), owner or sweep id.
    Or those a query finds (`where`, as `jobs list --where`; kiln.query), sorted by
    `order_by`, each with `values`: its value of every field in `columns` (comma-separated)."""
    from db.jobs import list_jobs as rows
    from db.labels import tags_of

    mine = identity.owner_filter
    if mine is not None and owner not in (None, mine):
        return []  # another user's jobs: none that this caller may see
    if where is not None or order_by is not None or columns is not None:
        if kind or model or sweep:
            raise SpecError("with where, order_by or columns, say kind, model and sweep in"
                            " `where` (e.g. where=model = 'linreg')", field="where")  # fmt: skip
        return search(request, mine or owner, status, where, order_by, columns, limit, offset)
    with state_of(request).sessions() as session:
        found = rows(session, status, limit, offset, owner=mine or owner, kind=kind,
                     model=model, sweep_id=sweep)  # fmt: skip
        tags = tags_of(session, [job.id for job in found])  # one query for the page
        return [job_document(session, job, attempts=False, tags=tags.get(job.id, {}))
                for job in found]  # fmt: skip


def search(request: Request, owner: str | None, status: str | None, where: str | None,
           order_by: str | None, columns: str | None, limit: int,
           offset: int) -> list[dict[str, Any]]:  # fmt: skip
    """GET /jobs with a query: the caller's own jobs only (`owner`), whatever it says."""
    from db.labels import tags_of
    from db.search import search_jobs
    from kiln.reader import parse_search

    query, order, fields = parse_search(where, order_by, columns)
    with state_of(request).sessions() as session:
        found = search_jobs(session, query, order, fields, limit=limit, offset=offset,
                            owner=owner, status=status)  # fmt: skip
        tags = tags_of(session, [job.id for job, _ in found])
        return [{**job_document(session, job, attempts=False, tags=tags.get(job.id, {})),
                 "values": values} for job, values in found]  # fmt: skip


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


class TagChange(BaseModel):
    """Tags to set (key -> value) and keys to remove."""

    model_config = ConfigDict(extra="forbid")
    set: dict[str, str] = Field(default_factory=dict, max_length=MAX_TAGS)
    remove: list[Annotated[str, StringConstraints(max_length=MAX_TAG_KEY_CHARS)]] = Field(
        default_factory=list, max_length=MAX_TAGS
    )


@router.post("/jobs/{job_id}/tags", summary="Set or remove a job's tags")
def tag_job(request: Request, identity: Submitter, job_id: str,
            change: TagChange) -> dict[str, Any]:  # fmt: skip
    """The job's tags after the change (as `kiln tag`)."""
    from db.labels import retag_job

    changes = check_tags(change.set)
    with state_of(request).sessions() as session:
        job = visible_job(session, identity, job_id)
        return {"id": job.id, "tags": retag_job(session, job, changes, change.remove)}


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


@router.get("/jobs/{job_id}/logs", summary="The job's own log, a page of lines at a time")
def logs(
    request: Request, identity: Caller, job_id: str,
    after: Annotated[int | None, Query(ge=-1, le=2**62)] = None,
    tail: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
) -> dict[str, Any]:  # fmt: skip
    """Lines `[seq, at, stream, text]` by number: up to 1000 after line `after`, or the last
    `tail`; `more` when another page follows, and the job's status read before the lines (an
    ended status without `more`: the log is complete). What `kiln logs --follow` polls."""
    state = state_of(request)
    with state.sessions() as session:
        job_id = visible_job(session, identity, job_id).id  # another user's: 404
    page = state.client.log_page(job_id, after, tail)  # pages of kiln.reader.LOG_PAGE lines
    return {"id": job_id, "status": page.status, "more": page.more,
            "lines": [[line.seq, line.at.isoformat(), line.stream, line.text]
                      for line in page.lines]}  # fmt: skip


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
def live_workers(request: Request, identity: Caller,
                 queue: WorkerQueue | None = None) -> dict[str, Any]:  # fmt: skip
    """The live workers (serving `queue`, if given): what `--wait` checks before it warns."""
    from db.workers import live_workers as alive

    state = state_of(request)
    with state.sessions() as session:
        names = [w.name for w in alive(session, queue, state.settings.worker_alive_s)]
        return {"queue": queue, "workers": names}


@router.get(
    "/jobs/{job_id}/events", summary="Progress as Server-Sent Events, until the job ends",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`progress`, `losses` and a final `end` event"}},
)  # fmt: skip
async def events(
    request: Request, identity: Caller, job_id: str,
    every_s: Annotated[float, Query(ge=0.2, le=60)] = 1.0,
) -> StreamingResponse:  # fmt: skip
    """`event: progress` (status, step, total, last_loss) when it changes, `event: losses`
    (new `[step, loss]` rows, thinned to 1000 an event; the event id is the last step, so a
    client that reconnects with Last-Event-ID gets only what it missed), and `event: end`
    with the final status. A comment line every 15 s keeps proxies from closing the stream."""
    state = state_of(request)

    def resolve() -> str:
        with state.sessions() as session:
            return visible_job(session, identity, job_id).id

    full_id = await run_in_threadpool(resolve)
    header = request.headers.get("last-event-id", "")
    after = int(header) if header.isdigit() and len(header) < 20 else -1
    stream = _event_stream(request, full_id, after, every_s)
    no_buffering = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=no_buffering)


async def _event_stream(request: Request, job_id: str, after: int,
                        every_s: float) -> AsyncIterator[str]:  # fmt: skip
    import json
    import time

    import anyio

    from kiln.reader import ENDED
    from kiln.server.problems import finite

    state = state_of(request)
    shown: dict[str, Any] | None = None
    quiet_since = time.monotonic()

    def snapshot(after: int) -> tuple[dict[str, Any], list[tuple[int, float]]]:
        from db.jobs import get_job
        from db.losses import losses_after

        with state.sessions() as session:
            job = get_job(session, job_id)
            progress = {"id": job.id, "status": job.status, "step": job.step,
                        "total": job.total_steps, "last_loss": job.last_loss,
                        "error": job.error}  # fmt: skip
            return progress, losses_after(session, job.id, after, EVENT_LOSSES)

    def event(name: str, data: Any, event_id: int | None = None) -> str:
        head = f"id: {event_id}\n" if event_id is not None else ""
        return f"{head}event: {name}\ndata: {json.dumps(finite(data), allow_nan=False)}\n\n"

    while not await request.is_disconnected():
        progress, rows = await run_in_threadpool(snapshot, after)
        if rows:
            after = rows[-1][0]
            yield event("losses", {"rows": rows}, after)
        if progress != shown:
            shown = progress
            yield event("progress", progress)
            quiet_since = time.monotonic()
        if progress["status"] in ENDED:
            yield event("end", progress)
            return
        if time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": still running\n\n"
        await anyio.sleep(every_s)

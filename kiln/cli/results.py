"""`jobs list/show/losses/params`: read what jobs stored."""

from __future__ import annotations

import click

from kiln.cli import JOB_FAILED, OK, App, jobs
from kiln.cli.render import FORMAT, JSON, emit_rows, job_to_dict
from kiln.records import STATS as STAT_KEYS

STATUSES = ["waiting", "queued", "running", "succeeded", "failed", "cancelled"]


def exit_for(status: str) -> int:
    return OK if status == "succeeded" else JOB_FAILED


@jobs.command("list")
@click.option(
    "--status", type=click.Choice(STATUSES), default=None, help="Only jobs in this state."
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@JSON
@click.pass_obj
def list_(app: App, status: str | None, limit: int, as_json: bool) -> None:
    """List recent jobs, newest first."""
    from db.jobs import list_jobs

    with app.sessions() as session:
        rows = list_jobs(session, status, limit)
    if as_json:
        app.emit([job_to_dict(j) for j in rows], as_json=True)
        return
    emit_rows(
        ["id", "kind", "status", "model", "queue", "progress", "last loss", "created"],
        [
            [
                j.id,
                j.kind,
                j.status,
                j.model,
                j.queue,
                f"{j.step}/{j.total_steps}",
                j.last_loss,
                j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            ]
            for j in rows
        ],  # fmt: skip
        "table",
    )


def show_job(app: App, job_id: str, as_json: bool) -> None:
    from db.jobs import attempts_of, get_job

    with app.sessions() as session:
        job = get_job(session, job_id)
        attempts = attempts_of(session, job.id)
    doc = job_to_dict(job, attempts)
    if as_json:
        app.emit(doc, as_json=True)
        return
    spec = job.spec
    lines = [
        f"job        {job.id} ({job.kind}, {job.model})",
        f"status     {job.status}",
        f"progress   {job.step}/{job.total_steps}",
        f"spec       {', '.join(f'{k}={v}' for k, v in spec.items() if v not in (None, {}, []))}",
        f"queue      {job.queue} (priority {job.priority})",
        f"created    {doc['created_at']}",
        f"started    {doc['started_at'] or '-'}",
        f"finished   {doc['finished_at'] or '-'}"
        + (f" ({doc['duration_s']} s)" if doc["duration_s"] is not None else ""),
        f"final loss {job.last_loss:.6g}" if job.last_loss is not None else "final loss -",
    ]
    info = job.info or {}
    if job.kind == "predict":
        lines.insert(1, f"from       fit {job.depends_on}")
        if info.get("coverage_90") is not None:
            lines.append(
                f"predicted  {info.get('rows')} rows x {info.get('num_samples')} draws;"
                f" {info['coverage_90']:.1%} of {info.get('observed')} observed values inside"
                " the 90% interval of obs"
            )
        elif "num_samples" in info:
            lines.append(f"predicted  {info.get('rows')} rows x {info.get('num_samples')} draws")
    data = info.get("data")
    if data:
        lines.append(f"data       {data['rows_used']} rows used, {data['rows_dropped']} dropped")
    if (job.info or {}).get("elbo"):
        lines.append(f"inference  {job.info['elbo']} on {job.info.get('device', '?')}")
    for a in attempts:
        lines.append(
            f"attempt {a.number}  {a.worker} on {a.host} ({a.device}) {a.outcome or 'running'}"
        )
    if job.error:
        lines.append(f"error      {job.error}")
    app.emit("\n".join(lines))


@jobs.command()
@click.argument("job_id")
@JSON
@click.pass_obj
def show(app: App, job_id: str, as_json: bool) -> None:
    """Show one job: spec, status, progress, attempts, timings, final loss, error."""
    show_job(app, job_id, as_json)


@jobs.command()
@click.argument("job_id")
@FORMAT
@click.pass_obj
def losses(app: App, job_id: str, fmt: str) -> None:
    """The loss of every step: one row per step."""
    from db.jobs import get_job
    from db.results import get_losses

    with app.sessions() as session:
        job = get_job(session, job_id)
        rows = get_losses(session, job.id)
    emit_rows(["step", "loss"], rows, fmt)


@jobs.command()
@click.argument("job_id")
@FORMAT
@click.pass_obj
def params(app: App, job_id: str, fmt: str) -> None:
    """Posterior of each latent site (constrained): mean, sd, q05, q50, q95, shape.

    For a predict job: the summaries of the posterior draws it made.
    """
    from db.jobs import get_job
    from db.results import get_params

    with app.sessions() as session:
        job = get_job(session, job_id)
        sites = get_params(session, job.id)
    if not sites:
        app.abort(f"job {job.id} has no parameters yet (status {job.status})", JOB_FAILED)
    rows = []
    for s in sites:
        if s.mean.size == 1:
            rows.append([s.site, *(float(getattr(s, k).reshape(-1)[0]) for k in STAT_KEYS),
                         list(s.shape)])  # fmt: skip
        else:
            for index in zip(*[i.reshape(-1) for i in _indices(s.mean.shape)], strict=True):
                name = f"{s.site}[{','.join(map(str, index))}]"
                rows.append([name, *(float(getattr(s, k)[index]) for k in STAT_KEYS),
                             list(s.shape)])  # fmt: skip
    columns = ["site", *STAT_KEYS, "shape"]
    emit_rows(columns, rows, fmt, title=f"posterior of job {job.id}" if fmt == "table" else None)


def _indices(shape: tuple[int, ...]) -> list:  # type: ignore[type-arg]
    import numpy as np

    return list(np.indices(shape))

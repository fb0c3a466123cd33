"""`jobs list/show/losses/params`: read what jobs stored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from kiln.cli.app import JOB_FAILED, OK, App, jobs
from kiln.cli.complete import job_ids
from kiln.cli.mcmcshow import mcmc_lines
from kiln.errors import NotFound
from kiln.jobinfo import BatchInfo, JobInfo, McmcInfo, PredictInfo, SviInfo, info_for
from kiln.records import STATS as STAT_KEYS
from kiln.render import FORMAT, JSON, emit_rows, job_to_dict

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

SEARCH_COLUMNS = "id,name,kind,status,model,final_loss,created"
STATUSES = ["waiting", "queued", "running", "succeeded", "failed", "cancelled"]


def exit_for(status: str) -> int:
    return OK if status == "succeeded" else JOB_FAILED


@jobs.command("list")
@click.option(
    "--status", type=click.Choice(STATUSES), default=None, help="Only jobs in this state."
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0, max=2**62), default=0,
              help="Skip this many jobs first (the next page).")  # fmt: skip
@click.option("--where", default=None, metavar="QUERY",
              help="Only jobs this query finds, e.g. \"tag.study = 'a' OR params.rugged.mean"
                   " < -0.2\" (README: Finding jobs).")  # fmt: skip
@click.option(
    "--order-by",
    default=None,
    metavar="FIELDS",
    help="Sort by these fields first, e.g. 'final_loss asc' (then newest first).",
)
@click.option(
    "--columns",
    default=None,
    metavar="A,B,C",
    help=f"Table columns: any fields of --where [default: {SEARCH_COLUMNS}].",
)
@JSON
@click.pass_obj
def list_(app: App, status: str | None, limit: int, offset: int, where: str | None,
          order_by: str | None, columns: str | None, as_json: bool) -> None:  # fmt: skip
    """List recent jobs, newest first (or found by --where, sorted by --order-by)."""
    if where is not None or order_by is not None or columns is not None or offset:
        list_found(app, status, limit, offset, where, order_by, columns, as_json)
        return
    rows = app.client.job_records(status, limit)
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


def list_found(app: App, status: str | None, limit: int, offset: int, where: str | None,
               order_by: str | None, columns: str | None, as_json: bool) -> None:  # fmt: skip
    """`list` with a query: a table of the chosen columns, or JSON job documents (with
    --columns: each job's id, name and those columns)."""
    import json

    shown = columns or SEARCH_COLUMNS
    found = app.client.search_records(where, order_by, shown, limit, offset, status)
    if as_json:
        docs = [job_to_dict(j) if columns is None
                else {"id": j.id, "name": j.name, **values} for j, values in found]  # fmt: skip
        app.emit(docs, as_json=True)
        return
    names = [c.strip() for c in shown.split(",")]

    def cell(value: Any) -> Any:
        return json.dumps(value) if isinstance(value, dict | list) else value

    emit_rows(names, [[cell(values[n]) for n in names] for _, values in found], "table")


def show_job(app: App, job_id: str, as_json: bool) -> None:
    try:
        job = app.client.job_record(job_id)
    except NotFound as not_a_job:
        try:  # a sweep's id given where a job's goes: say so
            sweep = app.client.sweep(job_id, members=False)
        except NotFound:
            raise not_a_job from None
        members = sum(sweep.counts.values())
        raise NotFound(f"{job_id} is not a job but a sweep of {members} members: `jobs sweep"
                       f" show {sweep.id}`") from None  # fmt: skip
    attempts = app.client.attempts(job.id)
    doc = job_to_dict(job, attempts)
    if as_json:
        app.emit(doc, as_json=True)
        return
    spec = job.spec
    lines = [
        f"job        {job.id} ({job.kind}, {job.model})",
        *([f"name       {job.name}"] if job.name else []),
        *(
            [f"tags       {', '.join(f'{k}={v}' for k, v in job.tags.items())}"] if job.tags else []
        ),  # fmt: skip
        f"status     {job.status}",
        f"progress   {job.step}/{job.total_steps}",
        f"spec       {', '.join(f'{k}={v}' for k, v in spec.items() if v not in (None, {}, []))}",
        f"queue      {job.queue} (priority {job.priority})",
        f"created    {doc['created_at']}",
        f"started    {doc['started_at'] or '-'}",
        f"finished   {doc['finished_at'] or '-'}"
        + (f" ({doc['duration_s']} s)" if doc["duration_s"] is not None else ""),
    ]
    info = info_for(str(spec.get("kind")), job.info)
    if job.kind == "fit" and not isinstance(info, McmcInfo):
        final = getattr(info, "final_loss", None)
        last = f"{job.last_loss:.6g}" if job.last_loss is not None else "-"
        lines.append(f"final loss {final:.6g} (mean of the last 100 steps; last step {last})"
                     if final is not None else f"last loss  {last}")  # fmt: skip
    if isinstance(info, SviInfo) and info.continued_from:
        lines.append(f"continued  from {info.continued_from} at step {info.continued_at}")
    lines += _info_lines(job.kind, job.depends_on, str(spec.get("sweep")), info)
    for a in attempts:
        lines.append(
            f"attempt {a.number}  {a.worker} on {a.host} ({a.device}) {a.outcome or 'running'}"
        )
    if job.error:
        lines.append(f"error      {job.error}")
    app.emit("\n".join(lines))


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@JSON
@click.pass_obj
def show(app: App, job_id: str, as_json: bool) -> None:
    """Show one job: spec, status, progress, attempts, timings, final loss, error."""
    show_job(app, job_id, as_json)


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@click.option("--tail", type=click.IntRange(1, 10**9), default=None, metavar="N",
              help="Only the last N rows.")  # fmt: skip
@click.option("--every", type=click.IntRange(1, 10**12), default=1, show_default=True,
              metavar="K", help="Only steps that are multiples of K.")  # fmt: skip
@click.option(
    "--lineage",
    is_flag=True,
    help="A continued fit's whole curve: its ancestors' steps, then its own.",
)
@FORMAT
@click.pass_obj
def losses(app: App, job_id: str, tail: int | None, every: int, lineage: bool,
           fmt: str) -> None:  # fmt: skip
    """The loss of every step: one row per step (or every K-th, or the last N)."""
    if not lineage:
        emit_rows(["step", "loss"], app.client.loss_rows(job_id, tail=tail, every=every), fmt)
        return
    rows = [r for r in lineage_rows(app, job_id) if r[0] % every == 0]
    emit_rows(["step", "loss"], rows[-tail:] if tail else rows, fmt)


MAX_LINEAGE = 1000  # ancestors followed (a cycle cannot happen: a parent is older)


def lineage_rows(app: App, job_id: str) -> list[tuple[int, float]]:
    """The loss rows of a fit and of the fits it continued, oldest first: each ancestor's
    rows before the step its continuation started at (a cancelled fit's steps after its last
    checkpoint were taken again by the continuation)."""
    job = app.client.job_record(job_id)
    rows = list(app.client.loss_rows(job.id))
    seen = {job.id}
    for _ in range(MAX_LINEAGE):
        info = info_for(str(job.spec.get("kind")), job.info)
        parent = getattr(info, "continued_from", None)
        at = getattr(info, "continued_at", None) or 0
        if parent is None or parent in seen:
            break
        try:
            job = app.client.job_record(parent)
        except NotFound:
            app.say(f"fit {parent} (continued at step {at}) is gone; the curve starts there")
            break
        seen.add(job.id)
        rows = [r for r in app.client.loss_rows(job.id) if r[0] < at] + rows
    return rows


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@FORMAT
@click.pass_obj
def params(app: App, job_id: str, fmt: str) -> None:
    """Posterior of each latent site (constrained): mean, sd, q05, q50, q95, shape.

    For a predict job: the summaries of the posterior draws it made.
    """
    job = app.client.job_record(job_id)
    sites = app.client.posterior_stats(job.id)
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


def _indices(shape: tuple[int, ...]) -> list[NDArray[np.intp]]:
    import numpy as np

    return list(np.indices(shape))


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@JSON
@click.pass_obj
def diagnostics(app: App, job_id: str, as_json: bool) -> None:
    """MCMC diagnostics: per site mean, sd, quantiles, r_hat, ess_bulk, ess_tail; per chain
    divergences, step size, tree depth, acceptance and time."""
    from kiln.cli.app import BAD_INPUT
    from kiln.records import DIAGNOSTICS

    job = app.client.job_record(job_id)
    sites = app.client.posterior_stats(job.id)
    diags = app.client.site_diagnostics(job.id)
    info = info_for(str(job.spec.get("kind")), job.info)
    if not isinstance(info, McmcInfo):
        app.abort(
            f"job {job.id} is not an MCMC fit (no chains to diagnose); `jobs params {job.id}`"
            " shows its posterior",
            BAD_INPUT,
        )
    if not diags:
        app.abort(f"job {job.id} has no diagnostics yet (status {job.status})", JOB_FAILED)
    # Per element: its name, the STAT_KEYS values, the DIAGNOSTICS values (None without any).
    entries: list[tuple[str, list[float], list[float | None]]] = []
    for s in sites:
        diag = diags.get(s.site)
        for name, index in _elements(s.site, s.mean.shape):
            stats = [float(getattr(s, k)[index]) for k in STAT_KEYS]
            extra = [float(diag[i][index]) if diag is not None else None for i in range(3)]
            entries.append((name, stats, extra))
    rows = [[name, *stats, *extra] for name, stats, extra in entries]
    per_chain = info.per_chain
    if as_json:
        app.emit(
            {
                "id": job.id, "method": job.spec.get("method"), "chains": info.chains,
                "warmup": info.warmup, "samples": info.samples, "jit": info.jit,
                "note": info.note, "divergences": info.divergences, "max_r_hat": info.max_r_hat,
                "sites": [dict(zip(["site", *STAT_KEYS, *DIAGNOSTICS], r, strict=True))
                          for r in rows],
                "per_chain": per_chain,
            },
            as_json=True,
        )  # fmt: skip
        return
    title = (
        f"{str(job.spec.get('method')).upper()} job {job.id}: {info.chains} chains x"
        f" {info.samples} draws after {info.warmup} warmup,"
        f" jit {'on' if info.jit else 'off'}, {info.divergences or 0} divergences"
    )

    def short(x: float | None, digits: int = 4) -> float | None:
        return None if x is None or x != x else float(f"{x:.{digits}g}")

    # r_hat to 5 digits, ess_bulk and ess_tail rounded (NaN and None shown as they are).
    shown = [[name, *(short(v) for v in stats), short(extra[0], 5),
              *(round(v) if v is not None and v == v else v for v in extra[1:])]
             for name, stats, extra in entries]  # fmt: skip
    emit_rows(["site", *STAT_KEYS, *DIAGNOSTICS], shown, "table", title=title)
    if per_chain:
        keys = ["chain", "seconds", "divergences", "step_size", "tree_depth_mean",
                "tree_depth_max", "accept_prob"]  # fmt: skip
        keys = [k for k in keys if any(k in c for c in per_chain)]
        emit_rows(keys, [[c.get(k) for k in keys] for c in per_chain], "table", title="chains")
    if info.note:
        app.say(f"note: {info.note}")


def _elements(site: str, shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """(display name, index) of each element of a site: `tau` or `theta[0]`, `theta[1]`..."""
    import numpy as np

    if int(np.prod(shape)) == 1:
        return [(site, tuple(0 for _ in shape))]
    return [(f"{site}[{','.join(map(str, i))}]", i) for i in np.ndindex(*shape)]


def _info_lines(family: str, depends_on: str | None, sweep: str, info: JobInfo) -> list[str]:
    """What `jobs show` prints of a job's typed info."""
    lines = []
    if isinstance(info, PredictInfo):
        lines.append(f"from       fit {depends_on}")
        drawn = f"{info.num_samples} draws"
        if info.rows is not None and info.num_samples is not None:
            drawn = f"{info.rows} rows x {drawn}"
        if info.coverage_90 is not None:
            lines.append(
                f"predicted  {drawn}; {info.coverage_90:.1%} of {info.observed} observed values"
                " inside their 90% interval"
            )
        elif info.num_samples is not None:
            lines.append(f"predicted  {drawn}")
    if info.metrics:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in info.metrics.items())
        lines.append(f"metrics    {shown}" + (" (latest)" if family == "fit" else ""))
    if info.sweep is not None:
        batch = info.batch if isinstance(info, SviInfo) else None
        how = f"in vectorised batch {batch}" if batch else "on its own"
        shown = ", ".join(f"{k}={v}" for k, v in info.sweep.settings.items())
        lines.append(f"sweep      {info.sweep.id} member {info.sweep.index} ({shown}), {how}")
    if isinstance(info, BatchInfo):
        ended = (f": {info.succeeded} succeeded, {info.failed} failed"
                 if info.succeeded is not None else "")  # fmt: skip
        lines.append(f"batch      {info.members} members of sweep {sweep}{ended}")
    data = info.data or {}
    if "rows_used" in data:
        lines.append(f"data       {data['rows_used']} rows used, {data['rows_dropped']} dropped")
    if isinstance(info, SviInfo) and info.elbo:
        lines.append(f"inference  {info.elbo} on {info.device or '?'}")
    if isinstance(info, McmcInfo) and info.method:
        lines.append(
            f"inference  {info.method.upper()} on {info.device or '?'}, {info.chains} chains"
            f" ({info.parallel or '?'}), jit {'on' if info.jit else 'off'}"
            + (f"; {info.divergences} divergences, max r_hat {info.max_r_hat:.4f}"
               if info.max_r_hat is not None else "")
        )  # fmt: skip
        lines += mcmc_lines(info)
        for chain, p in sorted(info.chain_progress.items(), key=lambda x: int(x[0])):
            phase = "warmup" if p.warmup else "sampling"
            lines.append(f"chain {chain:<4} {p.done}/{p.total} ({phase}),"
                         f" {p.divergences} divergences")  # fmt: skip
    if info.note:
        lines.append(f"note       {info.note}")
    return lines

"""`jobs list/show/losses/params`: read what jobs stored."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kiln.cli.app import JOB_FAILED, OK, App, jobs
from kiln.errors import NotFound
from kiln.jobinfo import BatchInfo, JobInfo, McmcInfo, PredictInfo, SviInfo, info_for
from kiln.records import STATS as STAT_KEYS
from kiln.render import FORMAT, JSON, emit_rows, job_to_dict

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

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
    lines += _info_lines(job.kind, job.depends_on, str(spec.get("sweep")), info)
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
@click.pass_obj
def logs(app: App, job_id: str) -> None:
    """What the job's model printed (stdout and stderr, the last KILN_SANDBOX_OUTPUT_BYTES),
    kept with the job when it ends; and how each attempt ended."""
    job = app.client.job_record(job_id)
    output = JobInfo.model_validate(job.info or {}).output
    for attempt in app.client.attempts(job.id):
        ended = f"{attempt.outcome or 'running'}" + (f": {attempt.error}" if attempt.error else "")
        app.say(f"attempt {attempt.number} on {attempt.worker} ({attempt.host}): {ended}")
    if output:
        click.echo(output, nl=not output.endswith("\n"))
    elif job.status in ("succeeded", "failed", "cancelled"):
        app.say(f"job {job.id} kept no output: only jobs of your own model files keep what"
                " they print (built-in and library models print nothing)")  # fmt: skip
    else:
        app.say(f"job {job.id} is {job.status}: what its model prints is kept when it ends")


@jobs.command()
@click.argument("job_id")
@click.option("--tail", type=click.IntRange(1, 10**9), default=None, metavar="N",
              help="Only the last N rows.")  # fmt: skip
@click.option("--every", type=click.IntRange(1, 10**12), default=1, show_default=True,
              metavar="K", help="Only steps that are multiples of K.")  # fmt: skip
@FORMAT
@click.pass_obj
def losses(app: App, job_id: str, tail: int | None, every: int, fmt: str) -> None:
    """The loss of every step: one row per step (or every K-th, or the last N)."""
    emit_rows(["step", "loss"], app.client.loss_rows(job_id, tail=tail, every=every), fmt)


@jobs.command()
@click.argument("job_id")
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
@click.argument("job_id")
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
        for chain, p in sorted(info.chain_progress.items(), key=lambda x: int(x[0])):
            phase = "warmup" if p.warmup else "sampling"
            lines.append(f"chain {chain:<4} {p.done}/{p.total} ({phase}),"
                         f" {p.divergences} divergences")  # fmt: skip
    if info.note:
        lines.append(f"note       {info.note}")
    return lines

"""`jobs samples/export/plot`: stored draws as tables, files others can open, and figures."""

from __future__ import annotations

import click

from kiln.cli.app import BAD_INPUT, App, jobs
from kiln.cli.complete import job_ids
from kiln.records import STATS


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@click.option("--site", default=None, help="Only this site (e.g. obs, mean, sigma).")
@click.option("--raw", is_flag=True, help="The draws themselves, one row per draw.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default=None,
    help="Output format [default: table; csv with --raw].",
)  # fmt: skip
@click.pass_obj
def samples(app: App, job_id: str, site: str | None, raw: bool, fmt: str | None) -> None:
    """Stored draws of a fit or predict job: per site (and element) mean, sd, q05, q50, q95.

    Kinds: posterior (latent sites), deterministic (the regression `mean`), predictive (`obs`).
    """
    from kiln.export import DATA_SITES, draws_table, summary_rows
    from kiln.render import emit_rows

    fmt = fmt or ("csv" if raw else "table")
    if raw and fmt == "table":
        app.abort("--raw draws are a wide table; use --format csv or json", BAD_INPUT)
    job = app.client.job_record(job_id)
    stored = [s for s in app.client.sample_summaries(job.id) if s.site not in DATA_SITES]
    if not stored:
        app.abort(
            f"job {job.id} has no stored samples (status {job.status})",
            BAD_INPUT if job.status == "succeeded" else 1,
        )
    names = [s.site for s in stored]
    if site is not None and site not in names:
        from kiln.specerrors import did_you_mean

        app.abort(f"job {job.id} has no site `{site[:100]}`{did_you_mean(site, names)} (sites:"
                  f" {', '.join(names[:30])}{', ...' if len(names) > 30 else ''})",
                  BAD_INPUT)  # fmt: skip
    chosen = [s for s in stored if site is None or s.site == site]
    if raw:
        draws = app.client.draws(job.id, sites=[s.site for s in chosen])
        if fmt == "json":
            app.emit({name: values.tolist() for name, values in draws.items()}, as_json=True)
            return
        columns, matrix = draws_table(draws)
        emit_rows(columns, [[int(r[0]), *r[1:].tolist()] for r in matrix], "csv")
        return
    rows = []
    for s in chosen:
        if s.stats is not None:
            rows.extend(summary_rows(s.site, s.kind, s.stats, s.shape))
    title = f"samples of job {job.id} ({chosen[0].num_samples} draws)" if fmt == "table" else None
    emit_rows(["site", "kind", *STATS], rows, fmt, title=title)


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@click.option(
    "--format", "fmt", type=click.Choice(["netcdf", "csv", "json"]), default=None,
    help="netcdf: ArviZ InferenceData (arviz.from_netcdf); csv: one row per draw; json: all"
    " [default: by the file's extension: .nc, .csv, .json].",
)  # fmt: skip
@click.option("-o", "--output", required=True, help="File to write.")
@click.option(
    "--id-column", default=None, metavar="COLUMN",
    help="Label the data rows with this column of the job's data (e.g. isocode) instead of"
    " their positions: unique short strings or integers.",
)  # fmt: skip
@click.option(
    "--warmup", is_flag=True, default=False,
    help="Add the warmup draws as ArviZ's warmup_posterior (netcdf; an MCMC fit submitted"
    " with --keep-warmup).",
)  # fmt: skip
@click.pass_obj
def export(app: App, job_id: str, fmt: str | None, output: str, id_column: str | None,
           warmup: bool) -> None:  # fmt: skip
    """Write a job's results to a file: posterior, predictive draws, observed data, losses."""
    from kiln.export import write_export
    from kiln.warmup import check_warmup_format

    fmt = export_format(app, fmt, output)
    check_warmup_format(fmt, warmup)
    results = app.client.results(job_id, id_column=id_column, warmup=warmup)
    written = write_export(results, fmt, output)
    app.say(f"wrote {written} ({fmt}, job {results.job_id})")


EXTENSIONS = {".nc": "netcdf", ".netcdf": "netcdf", ".nc4": "netcdf", ".csv": "csv",
              ".json": "json"}  # fmt: skip


def export_format(app: App, fmt: str | None, output: str) -> str:
    """The format asked for, or the one the file's extension names; a file whose extension
    names another format is refused (a .csv holding netCDF is no CSV)."""
    from pathlib import Path

    by_name = EXTENSIONS.get(Path(output).suffix.lower())
    if fmt is None:
        if by_name is None:
            app.abort(f"-o {output}: give --format (netcdf, csv or json), or a file name ending"
                      " in .nc, .csv or .json", BAD_INPUT)  # fmt: skip
        return by_name
    if by_name is not None and by_name != fmt:
        app.abort(f"-o {output} names a {by_name} file, but --format is {fmt}", BAD_INPUT)
    return fmt


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@click.option(
    "--kind", type=click.Choice(["loss", "params", "predictive", "trace", "metrics"]),
    default="predictive", show_default=True,
    help="loss: the fit's loss curve; params: posterior densities; predictive: what a predict"
    " job drew (rugged: data with the 90% bands of the regression line and of obs; forecast:"
    " the held-out days; vae: originals over reconstructions; bnn-classifier: digits with their"
    " class probabilities); trace: MCMC draws by chain; metrics: a fit's metrics by epoch.",
)  # fmt: skip
@click.option("-o", "--output", required=True, help="PNG file to write.")
@click.pass_obj
def plot(app: App, job_id: str, kind: str, output: str) -> None:
    """Draw a figure of a job's stored results (PNG)."""
    from kiln.figures import draw

    written, _ = draw(app.client, job_id, kind, output, say=app.say)
    app.say(f"wrote {written}")

"""`jobs samples/export/plot`: stored draws as tables, files others can open, and figures."""

from __future__ import annotations

from typing import Any

import click

from kiln.cli.app import BAD_INPUT, App, jobs
from kiln.records import STATS


@jobs.command()
@click.argument("job_id")
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
        app.abort(f"job {job.id} has no site `{site}` (sites: {', '.join(names)})", BAD_INPUT)
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
@click.argument("job_id")
@click.option(
    "--format", "fmt", type=click.Choice(["netcdf", "csv", "json"]), default="netcdf",
    show_default=True,
    help="netcdf: ArviZ InferenceData (arviz.from_netcdf); csv: one row per draw; json: all.",
)  # fmt: skip
@click.option("-o", "--output", required=True, help="File to write.")
@click.pass_obj
def export(app: App, job_id: str, fmt: str, output: str) -> None:
    """Write a job's results to a file: posterior, predictive draws, observed data, losses."""
    from kiln.export import write_export

    results = app.client.results(job_id)
    written = write_export(results, fmt, output)
    app.say(f"wrote {written} ({fmt}, job {results.job_id})")


@jobs.command()
@click.argument("job_id")
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
    from kiln.plots import plot_loss, plot_params, plot_predictive, plot_trace

    if not output.lower().endswith(".png"):
        app.abort(f"-o {output}: give a .png file name", BAD_INPUT)
    r = app.client.results(job_id)
    if kind == "predictive" and r.kind == "fit":
        # A fit has no predictive draws; its latest successful prediction of its own rows has.
        latest = app.client.latest_prediction(r.job_id)
        if latest is not None:
            app.say(f"fit {r.job_id}: plotting its prediction {latest}")
            r = app.client.results(latest)
    spec = r.fit_spec
    title = f"job {r.job_id}: {spec.get('formula')} ({spec.get('guide')})"
    if spec.get("kind") in ("user_svi_fit", "user_mcmc_fit"):
        how = spec.get("guide_function") or spec.get("guide")
        if spec.get("method", "svi") != "svi":
            how = f"{spec['method'].upper()}, {r.chains} chains"
        title = f"job {r.job_id}: {spec.get('model')} ({how})"
    if kind == "trace":
        if not r.sample_stats:
            app.abort(f"job {r.job_id} is not an MCMC fit; it has no chains to trace", BAD_INPUT)
        written = plot_trace(r.posterior, r.chains, output, title=title)
    elif kind == "metrics":
        written = _plot_metrics(app, r.fit_id, output)
    elif kind == "loss":
        if r.sample_stats:
            app.abort(
                f"job {r.job_id} is an MCMC fit: it has no loss; try --kind trace or params",
                BAD_INPUT,
            )
        if not r.losses:
            app.abort(f"job {r.job_id}'s fit {r.fit_id} stored no losses", BAD_INPUT)
        written = plot_loss(r.losses, output, title=f"fit {r.fit_id}: ELBO loss")
    elif kind == "params":
        written = plot_params(r.posterior, output, title=title)
    elif spec.get("kind") == "library_fit":
        written = _plot_library(app, r, output, title=f"job {r.job_id}: {spec['model']}")
    else:
        if not {"mean", "obs"} <= set(r.row_sites) or r.X is None or r.y is None:
            app.abort(
                f"job {r.job_id} is a {r.kind} job without predictive draws; run"
                f" `jobs submit predict --from {r.fit_id} --wait` and plot that job",
                BAD_INPUT,
            )
        written = plot_predictive(
            r.X, r.terms, r.y, r.response, r.row_sites["mean"], r.row_sites["obs"], output,
            title=title + (" - new data" if r.new_data else ""),
        )  # fmt: skip
    app.say(f"wrote {written}")


def _plot_library(app: App, r: Any, output: str, title: str) -> Any:
    """A library model's prediction: the figure its users look at."""
    from kiln.library import plots

    model = r.fit_spec["model"]
    sites = {**r.item_sites, **r.data_sites}
    if r.kind != "predict" or not sites:
        app.abort(
            f"job {r.job_id} is a {model} fit; plot its prediction (`jobs submit predict"
            f" --from {r.fit_id} --wait`), or use --kind metrics or loss",
            BAD_INPUT,
        )
    if model.startswith("forecast-"):
        return plots.plot_forecast(sites["__day__"][0], sites["__y__"][0], sites["forecast"],
                                   output, title)  # fmt: skip
    if model == "vae":
        side = int(round(sites["__x__"].shape[-1] ** 0.5))
        return plots.plot_reconstructions(sites["__x__"][0], sites["reconstruction"][0],
                                          (side, side), output, title)  # fmt: skip
    if model == "bnn-classifier":
        # Six test digits as they come, and the six the network is least sure of.
        import numpy as np

        images, probs = sites["__x__"][0], sites["class_probs"][0][: len(sites["__x__"][0])]
        entropy = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(axis=1)
        unsure = [int(i) for i in np.argsort(-entropy) if i >= 6][:6]
        chosen = [*range(min(6, len(images))), *unsure]
        labels = sites["__y__"][0][chosen]
        return plots.plot_class_probs(images[chosen], probs[chosen], labels, output,
                                      f"job {r.job_id}: 6 digits, 6 least sure")  # fmt: skip
    if model == "hmm":
        return plots.plot_states(sites["__day__"][0], sites["__y__"][0],
                                 sites["state_probs"][0], output, title)  # fmt: skip
    app.abort(f"no predictive figure for {model}", BAD_INPUT)


def _plot_metrics(app: App, fit_id: str, output: str) -> Any:
    from kiln.plots import plot_metrics

    rows = app.client.metric_rows(fit_id)
    if not rows:
        app.abort(f"job {fit_id} stored no metrics", BAD_INPUT)
    return plot_metrics(rows, output, title=f"fit {fit_id}: metrics by epoch")

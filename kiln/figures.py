"""draw(): which figure of a job's stored results to make, for `jobs plot` and GET /jobs/{id}/plot.

It reads through any reader of results (the Client, the RemoteClient, the server's own view
of what a caller may see) and says what it cannot draw as a UserError, so the CLI and the HTTP
API give the same messages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from kiln.errors import UserError
from kiln.reader import ENDED

if TYPE_CHECKING:
    from kiln.export import JobResults
    from kiln.reader import JobRecord

Kind = Literal["loss", "params", "predictive", "trace", "metrics"]
KINDS: tuple[Kind, ...] = ("loss", "params", "predictive", "trace", "metrics")


class ResultsReader(Protocol):
    """What draw() reads: a job's results, a fit's latest prediction, a job's metrics."""

    def results(self, job_id: str) -> JobResults: ...

    def latest_prediction(self, fit_id: str) -> str | None: ...

    def job_record(self, job_id: str) -> JobRecord: ...

    def loss_rows(self, job_id: str) -> list[tuple[int, float]]: ...

    def metric_rows(
        self, job_id: str, name: str | None = None
    ) -> list[tuple[str, int, int, float]]: ...


def draw(
    reader: ResultsReader, job_id: str, kind: str, output: str | Path,
    say: Callable[[str], None] | None = None,
) -> tuple[Path, list[str]]:  # fmt: skip
    """Draw the `kind` figure of the job into the PNG file `output`.

    Returns the file written and notes for people (e.g. that a fit's prediction was drawn),
    each also given to `say` as soon as it is known (the CLI's stderr).
    Raises UserError when the job has no such figure, NotFound for an unknown job.
    """
    from kiln.plots import plot_params, plot_predictive, plot_trace

    output = str(output)
    if not output.lower().endswith(".png"):
        raise UserError(f"-o {output}: give a .png file name")
    notes: list[str] = []
    if kind == "loss":  # from the loss rows, so a fit still running has its curve so far
        return _plot_loss(reader, job_id, output), notes
    r = reader.results(job_id)
    if kind == "predictive" and r.kind == "fit":
        # A fit has no predictive draws; its latest successful prediction of its own rows has.
        latest = reader.latest_prediction(r.job_id)
        if latest is not None:
            notes.append(f"fit {r.job_id}: plotting its prediction {latest}")
            if say is not None:
                say(notes[-1])
            r = reader.results(latest)
    spec = r.fit_spec
    title = f"job {r.job_id}: {spec.get('formula')} ({spec.get('guide')})"
    if spec.get("kind") == "library_fit":
        title = f"job {r.job_id}: {spec.get('model')} ({spec.get('optim', 'Adam')}, SVI)"
    if spec.get("kind") in ("user_svi_fit", "user_mcmc_fit"):
        how = spec.get("guide_function") or spec.get("guide")
        if spec.get("method", "svi") != "svi":
            how = f"{spec['method'].upper()}, {r.chains} chains"
        title = f"job {r.job_id}: {spec.get('model')} ({how})"
    written: Path
    if kind == "trace":
        if not r.sample_stats:
            raise UserError(f"job {r.job_id} is not an MCMC fit; it has no chains to trace")
        written = plot_trace(r.posterior, r.chains, output, title=title)
    elif kind == "metrics":
        written = _plot_metrics(reader, r.fit_id, output)
    elif kind == "params":
        if not r.posterior:
            raise UserError(
                f"job {r.job_id} stored no posterior draws to plot (a {r.kind} job of"
                f" {spec.get('model')}); `jobs params {r.fit_id}` has its summaries"
            )
        # A library model's vector sites named by what they weigh (forecast: the features).
        names = r.info.get("feature_names") if spec.get("kind") == "library_fit" else None
        labels = {"weight": [str(n) for n in names]} if isinstance(names, list) else None
        written = plot_params(r.posterior, output, title=title, labels=labels)
    elif kind != "predictive":
        raise UserError(f"--kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    elif spec.get("kind") == "library_fit":
        written = _plot_library(r, output, title=f"job {r.job_id}: {spec['model']}")
    else:
        if not {"mean", "obs"} <= set(r.row_sites) or r.X is None or r.y is None:
            raise UserError(
                f"job {r.job_id} is a {r.kind} job without predictive draws; run"
                f" `jobs submit predict --from {r.fit_id} --wait` and plot that job"
            )
        written = plot_predictive(
            r.X, r.terms, r.y, r.response, r.row_sites["mean"], r.row_sites["obs"], output,
            title=title + (" - new data" if r.new_data else ""),
        )  # fmt: skip
    return Path(written), notes


def _plot_loss(reader: ResultsReader, job_id: str, output: str) -> Path:
    """The loss curve of the job's fit (a predict job's: its fit's), as far as it has run."""
    from kiln.plots import plot_loss

    job = reader.job_record(job_id)
    fit = reader.job_record(job.depends_on) if job.kind == "predict" and job.depends_on else job
    if fit.spec.get("method", "svi") != "svi":
        raise UserError(
            f"job {job.id} is an MCMC fit: it has no loss; try --kind trace or params"
            if fit is job else f"job {job.id}'s fit {fit.id} is an MCMC fit: it has no loss"
        )  # fmt: skip
    rows = reader.loss_rows(fit.id)
    if not rows:
        raise UserError(f"job {job.id}'s fit {fit.id} stored no losses"
                        + (f" yet ({fit.status})" if fit.status not in ENDED else ""))  # fmt: skip
    running = (
        f" ({fit.status}, step {fit.step} of {fit.total_steps})" if fit.status not in ENDED else ""
    )
    return Path(plot_loss(rows, output, title=f"fit {fit.id}: ELBO loss{running}"))


def _plot_library(r: JobResults, output: str, title: str) -> Any:
    """A library model's prediction: the figure its users look at."""
    from kiln.library import plots

    model = r.fit_spec["model"]
    sites = {**r.item_sites, **r.data_sites}
    if r.kind != "predict" or not sites:
        raise UserError(
            f"job {r.job_id} is a {model} fit; plot its prediction (`jobs submit predict"
            f" --from {r.fit_id} --wait`), or use --kind metrics or loss"
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
    raise UserError(f"no predictive figure for {model}")


def _plot_metrics(reader: ResultsReader, fit_id: str, output: str) -> Any:
    from kiln.plots import plot_metrics

    rows = reader.metric_rows(fit_id)
    if not rows:
        raise UserError(f"job {fit_id} stored no metrics")
    return plot_metrics(rows, output, title=f"fit {fit_id}: metrics by epoch")

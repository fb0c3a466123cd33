"""`jobs metrics` and `jobs models`: metrics by step, and the built-in models with options."""

from __future__ import annotations

from typing import Any, TypedDict

import click

from kiln.cli.app import NOT_FOUND, App, jobs
from kiln.cli.complete import job_ids
from kiln.render import FORMAT, JSON, emit_rows


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@click.option("--name", default=None, help="Only this metric (e.g. test_elbo).")
@FORMAT
@click.pass_obj
def metrics(app: App, job_id: str, name: str | None, fmt: str) -> None:
    """A job's metrics by step and epoch: train_elbo, test_elbo, test_accuracy, mse, mae...
    (a predict job's at step 0)."""
    job = app.client.job_record(job_id)
    rows = app.client.metric_rows(job.id, name)
    if not rows:
        have = sorted({r[0] for r in app.client.metric_rows(job.id)}) if name else []
        what = f"metric `{name}`" if name else "metrics"
        known = f"; it has: {', '.join(have)}" if have else f" (status {job.status})"
        app.abort(f"job {job.id} has no {what}{known}", NOT_FOUND)
    if fmt == "table":
        # One row per step, one column per metric: reads like a training log.
        names = list(dict.fromkeys(r[0] for r in rows))
        by_step: dict[tuple[int, int], dict[str, float]] = {}
        for metric, step, epoch, value in rows:
            by_step.setdefault((step, epoch), {})[metric] = value
        table = [[step, epoch, *(values.get(n) for n in names)]
                 for (step, epoch), values in by_step.items()]  # fmt: skip
        emit_rows(["step", "epoch", *names], table, "table", title=f"metrics of job {job.id}")
        return
    emit_rows(["name", "step", "epoch", "value"], rows, fmt)


class _ModelDoc(TypedDict):
    name: str
    summary: str
    data: list[str]
    options: dict[str, Any]


@jobs.command()
@JSON
@click.pass_obj
def models(app: App, as_json: bool) -> None:
    """The built-in models: what data each takes and the options `--set` may change."""
    from kiln.catalog import LIBRARY_MODELS, MODELS
    from kiln.library import get_card

    docs: list[_ModelDoc] = [
        {"name": name, "summary": "Bayesian linear regression on a formula (the rugged model);"
         " --formula, --prior, --guide", "data": ["csv"], "options": {}}
        for name in MODELS]  # fmt: skip
    for name in LIBRARY_MODELS:
        card = get_card(name)
        docs.append({"name": name, "summary": card.summary, "data": list(card.data),
                     "options": dict(card.defaults)})  # fmt: skip
    if as_json:
        app.emit(docs, as_json=True)
        return
    rows = [[d["name"], ", ".join(d["data"]),
             " ".join(f"{k}={v}" for k, v in d["options"].items()), d["summary"]]
            for d in docs]  # fmt: skip
    emit_rows(["model", "data", "options (--set KEY=VALUE)", "what"], rows, "table")

"""`jobs submit fit`: validate, store and queue a fit; optionally wait for it."""

from __future__ import annotations

import sys
from typing import Any

import click

from kiln.catalog import ELBOS, GUIDES, MODELS, OPTIMS, QUEUES
from kiln.cli import App, jobs


@jobs.group()
def submit() -> None:
    """Submit a job."""


@submit.command()
@click.option("--model", required=True, type=click.Choice(MODELS), help="Built-in model.")
@click.option("--data", "data_path", required=True, help="CSV file with the data.")
@click.option("--formula", required=True, help='e.g. "log(rgdppc_2000) ~ cont_africa * rugged".')
@click.option("--guide", type=click.Choice(GUIDES), default="AutoNormal", show_default=True)
@click.option("--steps", type=int, default=1000, show_default=True, help="SVI steps.")
@click.option("--lr", type=float, default=0.02, show_default=True, help="Learning rate.")
@click.option("--seed", type=int, default=None, help="RNG seed (default: random, recorded).")
@click.option(
    "--elbo", type=click.Choice(ELBOS), default="auto", show_default=True,
    help="auto: JitTrace_ELBO for built-in models.",
)  # fmt: skip
@click.option("--optim", type=click.Choice(OPTIMS), default="Adam", show_default=True)
@click.option(
    "--num-samples", type=int, default=1000, show_default=True,
    help="Posterior draws kept for the parameter summaries.",
)  # fmt: skip
@click.option(
    "--prior", "priors", multiple=True,
    help="Override a prior: TERM=normal(LOC,SCALE) or sigma=uniform(LOW,HIGH). Repeatable.",
)  # fmt: skip
@click.option(
    "--init", type=click.Choice(["auto", "median"]), default="auto", show_default=True,
    help="Guide start: auto = least squares; median = Pyro's default (the prior's median).",
)  # fmt: skip
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True
)
@click.option("--queue", type=click.Choice(QUEUES), default=None, help="Default: by device.")
@click.option("--priority", type=int, default=5, show_default=True, help="0-9, higher runs sooner.")
@click.option("--wait", is_flag=True, help="Wait for the job to end; exit 1 if it failed.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after SECONDS.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def fit(app: App, data_path: str, priors: tuple[str, ...], wait: bool, timeout: float | None,
        as_json: bool, **options: Any) -> None:  # fmt: skip
    """Fit a built-in model by SVI on a CSV file."""
    from kiln.cli.results import exit_for, show_job
    from kiln.cli.watch import wait_for_job
    from scheduler.enqueue import read_data_file, submit_fit
    from scheduler.spec import parse_prior_option, parse_spec
    from worker.app import Sender

    raw = {"kind": "fit", **options, "priors": dict(parse_prior_option(p) for p in priors)}
    spec = parse_spec(raw)
    content = read_data_file(data_path, app.settings.max_dataset_bytes)
    job = submit_fit(
        app.sessions, spec, content, data_name=data_path,
        send=lambda *message: Sender(app.celery)(*message),
        max_steps=app.settings.max_steps, max_attempts=app.settings.max_attempts,
    )  # fmt: skip
    if not wait:
        if as_json:
            app.emit({"id": job.id, "status": job.status, "queue": job.queue}, as_json=True)
        else:
            app.emit(job.id)
            app.say(f"job {job.id} queued on `{job.queue}`; follow it with `jobs watch {job.id}`")
        return
    app.say(f"job {job.id} queued on `{job.queue}`")
    final = wait_for_job(app, job.id, timeout, quiet=as_json)
    show_job(app, final.id, as_json)
    sys.exit(exit_for(final.status))

"""`jobs submit fit`: validate, store and queue a fit; optionally wait for it."""

from __future__ import annotations

import sys
from typing import Any

import click

from kiln.catalog import ELBOS, GUIDES, MODELS, OPTIMS, QUEUES
from kiln.cli import App, jobs

WAIT = click.option("--wait", is_flag=True, help="Wait for the job to end; exit 1 if it failed.")
TIMEOUT = click.option(
    "--timeout", type=float, default=None, help="With --wait: give up after SECONDS."
)
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


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
@click.option(
    "--checkpoint-every", type=int, default=None, metavar="STEPS",
    help="Save resumable state every STEPS steps [default: KILN_CHECKPOINT_EVERY, 1000].",
)  # fmt: skip
@click.option(
    "--checkpoint-every-s", type=float, default=None, metavar="SECONDS",
    help="...and every SECONDS seconds [default: KILN_CHECKPOINT_EVERY_S, 30]; 0: never.",
)  # fmt: skip
@click.option(
    "--then-predict", "then_predict", type=int, default=None, metavar="SAMPLES",
    help="Also submit a predict job of SAMPLES draws that runs when the fit succeeds.",
)  # fmt: skip
@WAIT
@TIMEOUT
@AS_JSON
@click.pass_obj
def fit(app: App, data_path: str, priors: tuple[str, ...], wait: bool, timeout: float | None,
        as_json: bool, then_predict: int | None, **options: Any) -> None:  # fmt: skip
    """Fit a built-in model by SVI on a CSV file."""
    from scheduler.enqueue import Limits, read_data_file, submit_fit
    from scheduler.spec import parse_prior_option, parse_spec
    from worker.app import Sender

    raw = {"kind": "fit", **options, "priors": dict(parse_prior_option(p) for p in priors)}
    spec = parse_spec(raw)
    content = read_data_file(data_path, app.settings.max_dataset_bytes)
    created = submit_fit(
        app.sessions, spec, content, data_name=data_path,
        send=lambda *message: Sender(app.celery)(*message),
        limits=Limits.from_settings(app.settings), then_predict=then_predict,
    )  # fmt: skip
    _report(app, created, wait, timeout, as_json)


@submit.command()
@click.option(
    "--from", "from_job", required=True, metavar="FIT_ID", help="The fit to predict from."
)
@click.option(
    "--data", "data_path", default=None,
    help="CSV of new rows (out-of-sample). Default: the fit's own data.",
)  # fmt: skip
@click.option(
    "--samples", "num_samples", type=int, default=800, show_default=True,
    help="Posterior predictive draws (capped by KILN_MAX_PREDICT_SAMPLES).",
)  # fmt: skip
@click.option("--seed", type=int, default=None, help="RNG seed (default: random, recorded).")
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True
)
@click.option("--queue", type=click.Choice(QUEUES), default=None, help="Default: by device.")
@click.option("--priority", type=int, default=5, show_default=True, help="0-9, higher runs sooner.")
@WAIT
@TIMEOUT
@AS_JSON
@click.pass_obj
def predict(app: App, data_path: str | None, wait: bool, timeout: float | None, as_json: bool,
            **options: Any) -> None:  # fmt: skip
    """Draw from the posterior predictive of a fit, for its own rows or new ones.

    A fit that is still queued or running is waited for: the predict job starts when the fit
    has succeeded, and fails with the reason if the fit did not.
    """
    from scheduler.enqueue import Limits, read_data_file, submit_predict
    from scheduler.spec import parse_predict_spec
    from worker.app import Sender

    spec = parse_predict_spec({"kind": "predict", **options})
    content = read_data_file(data_path, app.settings.max_dataset_bytes) if data_path else None
    job = submit_predict(
        app.sessions, spec, content, data_name=data_path,
        send=lambda *message: Sender(app.celery)(*message),
        limits=Limits.from_settings(app.settings),
    )  # fmt: skip
    _report(app, [job], wait, timeout, as_json)


def _report(app: App, created: list[Any], wait: bool, timeout: float | None, as_json: bool) -> None:
    """Print the new job ids (or wait for the jobs to end, in order, and show them)."""
    from kiln.cli.results import exit_for, show_job
    from kiln.cli.watch import wait_for_job

    def where(job: Any) -> str:
        after = f"after {job.depends_on}" if job.status == "waiting" else f"on `{job.queue}`"
        return f"job {job.id} ({job.kind}) {job.status} {after}"

    if not wait:
        if as_json:
            docs = [{"id": j.id, "kind": j.kind, "status": j.status, "queue": j.queue,
                     "depends_on": j.depends_on} for j in created]  # fmt: skip
            app.emit(docs[0] if len(docs) == 1 else docs, as_json=True)
            return
        for job in created:
            app.emit(job.id)
            app.say(f"{where(job)}; follow it with `jobs watch {job.id}`")
        return
    for job in created:
        app.say(where(job))
    finals = []
    for job in created:
        finals.append(wait_for_job(app, job.id, timeout, quiet=as_json))
    if as_json and len(finals) > 1:
        from kiln.cli.render import job_to_dict

        with app.sessions() as session:
            from db.jobs import attempts_of, get_job

            app.emit([job_to_dict(get_job(session, f.id), attempts_of(session, f.id))
                      for f in finals], as_json=True)  # fmt: skip
    else:
        for final in finals:
            show_job(app, final.id, as_json)
    worst = next((f for f in finals if f.status != "succeeded"), finals[-1])
    sys.exit(exit_for(worst.status))

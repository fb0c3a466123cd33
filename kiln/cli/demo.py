"""`jobs demo`: the embedded stack end to end: a worker, the rugged fit, a table and a PNG."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from kiln.cli import BAD_INPUT, JOB_FAILED, App, jobs

RUGGED_FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"


def default_rugged_path() -> Path | None:
    """../shared/data/rugged_data.csv beside the checkout (or the working directory)."""
    roots = [Path(__file__).resolve().parents[2], Path.cwd()]
    for root in roots:
        candidate = root.parent / "shared" / "data" / "rugged_data.csv"
        if candidate.is_file():
            return candidate
    return None


@jobs.command()
@click.option(
    "--data", "data_path", default=None, help="rugged_data.csv (default: ../shared/data)."
)
@click.option("--guide", default="AutoNormal", show_default=True)
@click.option("--steps", type=int, default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", default="kiln-demo.png", show_default=True, help="PNG to write.")
@click.pass_obj
def demo(app: App, data_path: str | None, guide: str, steps: int, seed: int, output: str) -> None:
    """Fit the Pyro tutorial's rugged regression through a real worker and show the result."""
    from db.datasets import load_dataset
    from db.jobs import get_job
    from db.results import get_draws, get_losses
    from kiln.cli.results import exit_for, params
    from kiln.cli.watch import wait_for_job
    from kiln.plots import plot_regression_fit
    from kiln.tables import read_csv_bytes
    from scheduler.enqueue import read_data_file, submit_fit
    from scheduler.spec import parse_spec
    from worker.app import Sender

    path = Path(data_path) if data_path else default_rugged_path()
    if path is None:
        app.abort("rugged_data.csv not found beside the checkout; pass --data PATH", BAD_INPUT)
    app.say(f"kiln demo: database {app.settings.db_url}, broker {app.settings.broker_url}")
    spec = parse_spec({"kind": "fit", "model": "linreg", "formula": RUGGED_FORMULA,
                       "guide": guide, "steps": steps, "lr": 0.02, "seed": seed})  # fmt: skip
    content = read_data_file(path, app.settings.max_dataset_bytes)
    sender = Sender(app.celery)  # starts the embedded broker if it is not running
    log_path = app.settings.home / "demo-worker.log"
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "kiln.cli", "worker", "--queues", "cpu",
             "--name", f"demo-{os.getpid()}"],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )  # fmt: skip
    app.say(f"kiln demo: started worker pid {worker.pid} (log: {log_path})")
    try:
        job = submit_fit(app.sessions, spec, content, data_name=str(path), send=sender,
                         max_steps=app.settings.max_steps,
                         max_attempts=app.settings.max_attempts)  # fmt: skip
        app.say(
            f"kiln demo: submitted job {job.id}: linreg {RUGGED_FORMULA}, {guide}, {steps} steps"
        )
        final = wait_for_job(app, job.id, timeout=600)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    if final.status != "succeeded":
        app.abort(f"job {final.id} {final.status}: {final.error}", exit_for(final.status))
    ctx = click.get_current_context()
    ctx.invoke(params, job_id=final.id, fmt="table")
    with app.sessions() as session:
        job = get_job(session, final.id)
        frame = read_csv_bytes(load_dataset(session, job.dataset_id or "").content)
        draws = get_draws(session, job.id)
        losses = get_losses(session, job.id)
    info = job.info or {}
    tail = [loss for _, loss in losses[-100:]]
    app.emit(
        f"job {job.id}: {len(losses)} steps, mean loss over the last 100 steps "
        f"{sum(tail) / max(len(tail), 1):.1f}, {info.get('elbo')}, "
        f"{info.get('data', {}).get('rows_used')} rows used "
        f"({info.get('data', {}).get('rows_dropped')} dropped)"
    )
    if not draws:
        app.abort(f"job {job.id} stored no posterior draws", JOB_FAILED)
    written = plot_regression_fit(
        frame, RUGGED_FORMULA, draws, losses, output,
        title=f"Kiln job {job.id}: {RUGGED_FORMULA} ({guide})",
    )  # fmt: skip
    app.emit(f"wrote {written}")

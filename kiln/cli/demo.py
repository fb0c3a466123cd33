"""`jobs demo`: the embedded stack end to end: a worker, the rugged fit, a table and a PNG, and
how to open the dashboard on them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from kiln.cli.app import BAD_INPUT, JOB_FAILED, App, jobs

RUGGED_FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"


def default_rugged_path() -> Path | None:
    """rugged_data.csv shipped in the installed package, else ../shared/data beside the
    checkout (or the working directory): kiln.packaged_data."""
    from kiln.packaged_data import data_file

    return data_file("rugged_data.csv")


@jobs.command()
@click.option(
    "--data",
    "data_path",
    default=None,
    help="rugged_data.csv (default: the copy shipped with Kiln, or ../shared/data).",
)
@click.option("--guide", default="AutoNormal", show_default=True)
@click.option("--steps", type=int, default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", default="kiln-demo.png", show_default=True, help="PNG to write.")
@click.pass_obj
def demo(app: App, data_path: str | None, guide: str, steps: int, seed: int, output: str) -> None:
    """Fit the Pyro tutorial's rugged regression through a real worker, predict 800 draws,
    and show the result: a table of the posterior and the tutorial's figure (PNG)."""
    from kiln.cli.results import exit_for, params
    from kiln.cli.watch import wait_for_job
    from kiln.jobinfo import PredictInfo, SviInfo, info_for
    from kiln.plots import plot_predictive

    path = Path(data_path) if data_path else default_rugged_path()
    if path is None:
        from kiln.packaged_data import missing_message

        app.abort(missing_message("rugged_data.csv"), BAD_INPUT)
    app.say(f"kiln demo: database {app.settings.db_url}, broker {app.settings.broker_url}")
    request = app.client.fit_request(path, RUGGED_FORMULA, guide=guide, steps=steps, lr=0.02,
                                     seed=seed)  # fmt: skip
    app.celery  # noqa: B018  (starts the embedded broker if it is not running)
    log_path = app.settings.home / "demo-worker.log"
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "kiln.cli", "worker", "--queues", "cpu",
             "--name", f"demo-{os.getpid()}"],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )  # fmt: skip
    app.say(f"kiln demo: started worker pid {worker.pid} (log: {log_path})")
    try:
        job, predict = app.client.submit(request, then_predict=800)
        app.say(
            f"kiln demo: submitted fit {job.id}: linreg {RUGGED_FORMULA}, {guide}, {steps} steps,"
            f" and predict {predict.id} (800 draws) that waits for it"
        )
        final = wait_for_job(app, job.id, timeout=600)
        if final.status == "succeeded":
            final = wait_for_job(app, predict.id, timeout=300)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    if final.status != "succeeded":
        app.abort(f"job {final.id} {final.status}: {final.error}", exit_for(final.status))
    ctx = click.get_current_context()
    ctx.invoke(params, job_id=job.id, fmt="table")
    results = app.client.results(predict.id)
    fit_info = info_for("linreg_fit", app.client.job_record(job.id).info)
    data = fit_info.data or {}
    predicted = info_for("predict", results.info)
    assert isinstance(fit_info, SviInfo) and isinstance(predicted, PredictInfo)
    losses = results.losses
    tail = [loss for _, loss in losses[-100:]]
    app.emit(
        f"fit {job.id}: {len(losses)} steps, mean loss over the last 100 steps "
        f"{sum(tail) / max(len(tail), 1):.1f}, {fit_info.elbo}, "
        f"{data.get('rows_used')} rows used ({data.get('rows_dropped')} dropped)"
    )
    app.emit(
        f"predict {predict.id}: 800 draws of obs for {predicted.rows} rows;"
        f" {predicted.coverage_90 or 0:.1%} of observed log GDP values inside the 90% interval"
    )
    if not {"mean", "obs"} <= set(results.row_sites) or results.X is None or results.y is None:
        app.abort(f"job {predict.id} stored no predictive draws", JOB_FAILED)
    written = plot_predictive(
        results.X, results.terms, results.y, results.response, results.row_sites["mean"],
        results.row_sites["obs"], output, losses=losses,
        title=f"Kiln fit {job.id} + predict {predict.id}: {RUGGED_FORMULA} ({guide})",
    )  # fmt: skip
    app.emit(f"wrote {written}")
    me = command_name()
    app.emit(
        f"next: `{me} samples {predict.id} --site obs`, `{me} export {predict.id} -o rugged.nc`,"
        f" `{me} plot {predict.id} --kind params -o params.png`"
    )
    _dashboard_hint(app, job.id)


def _dashboard_hint(app: App, fit_id: str) -> None:
    """How to look at the demo's fit and prediction in the browser: the command, the URL, and
    a token made for it (role read: it sees every job and changes nothing)."""
    from db.tokens import create_token

    with app.sessions() as session:
        view, token = create_token(session, "demo", "read")
    home, me = os.environ.get("KILN_HOME"), command_name()
    start = f"KILN_HOME={home} {me} server" if home else f"{me} server"
    app.emit(
        f"dashboard: run `{start}` (in another terminal), open"
        f" http://127.0.0.1:8321/ui/jobs/{fit_id} and log in with this token (role read;"
        f" `{me} token revoke {view.id}` ends it):\n  {token}"
    )


def command_name() -> str:
    """The name the user ran the CLI by (`kiln`, or `jobs`), for the commands the demo
    suggests; `kiln` when run otherwise (python -m kiln.cli)."""
    name = click.get_current_context().find_root().info_name
    return name if name in ("kiln", "jobs") else "kiln"

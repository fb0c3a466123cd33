"""`jobs watch`: follow a job until it ends (a progress bar on a terminal, lines otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from kiln.cli.app import UNAVAILABLE, App, jobs
from kiln.cli.complete import job_ids

if TYPE_CHECKING:
    from kiln.reader import JobRecord

NO_WORKER_AFTER_S = 3.0


def no_worker_hint(queue: str) -> str:
    """What to start when no live worker serves `queue`."""
    base, _, user = queue.partition(".")
    if user:
        return (f"no live worker that runs users' model files serves queue `{queue}`; start one"
                f" with `KILN_ALLOW_USER_CODE=true jobs worker --queues {base}`")  # fmt: skip
    return f"no live worker serves queue `{queue}`; start one with `jobs worker --queues {queue}`"


LINE_EVERY_S = 5.0


def wait_for_job(app: App, job_id: str, timeout: float | None, quiet: bool = False) -> JobRecord:
    """Poll the job until it ends; returns it as it ended.

    Says so on stderr when no live worker serves the job's queue, and keeps waiting;
    with `timeout`, gives up with exit code UNAVAILABLE.
    """
    started = time.monotonic()
    warned = False
    last_line = 0.0
    bar = _Bar(job_id) if sys.stderr.isatty() and not quiet else None
    try:
        while True:
            job = app.client.job_record(job_id)
            terminal = job.is_terminal
            idle = (
                not terminal
                and not warned
                and job.status == "queued"
                and time.monotonic() - started > NO_WORKER_AFTER_S
                and not app.client.live_workers(job.queue)
            )
            if idle:
                app.say(f"job {job.id}: {no_worker_hint(job.queue)}. Still waiting...")
                warned = True
            if bar:
                bar.update(job)
            elif not quiet and time.monotonic() - last_line >= LINE_EVERY_S and not terminal:
                last_line = time.monotonic()
                loss = f", loss {job.last_loss:.4g}" if job.last_loss is not None else ""
                shown = metrics_text(job)
                app.say(f"job {job.id}: {job.status} {job.step}/{job.total_steps}{loss}"
                        + (f", {shown}" if shown else ""))  # fmt: skip
            if terminal:
                return job
            if timeout is not None and time.monotonic() - started > timeout:
                app.abort(
                    f"gave up waiting after {timeout:g} s; job {job.id} is still {job.status}",
                    UNAVAILABLE,
                )
            time.sleep(app.settings.poll_interval_s)
    finally:
        if bar:
            bar.stop()


def metrics_text(job: JobRecord) -> str:
    """The latest value of each metric a running job reported (its info's `metrics`)."""
    from kiln.jobinfo import info_for

    latest = info_for(str((job.spec or {}).get("kind")), job.info).metrics
    return ", ".join(f"{name} {value:.4g}" for name, value in latest.items())


class _Bar:
    """A rich progress bar on stderr: step/total, steps/s, latest loss."""

    def __init__(self, job_id: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} steps/s"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[metrics]}"),
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task(job_id, total=None, rate="-", loss="-", metrics="")
        self.samples: list[tuple[float, int]] = []
        self.progress.start()

    def update(self, job: JobRecord) -> None:
        now = time.monotonic()
        self.samples = [s for s in self.samples if now - s[0] < 5.0] + [(now, job.step)]
        (t0, s0), (t1, s1) = self.samples[0], self.samples[-1]
        rate = f"{(s1 - s0) / (t1 - t0):.0f}" if t1 > t0 else "-"
        loss = f"{job.last_loss:.4g}" if job.last_loss is not None else "-"
        self.progress.update(
            self.task,
            description=f"{job.id} {job.status}",
            completed=job.step,
            total=job.total_steps,
            rate=rate,
            loss=loss,
            metrics=metrics_text(job),
        )

    def stop(self) -> None:
        self.progress.stop()


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@click.option("--timeout", type=float, default=None, help="Give up after SECONDS (exit code 4).")
@click.option("--json", "as_json", is_flag=True, help="Print the final job as JSON.")
@click.pass_obj
def watch(app: App, job_id: str, timeout: float | None, as_json: bool) -> None:
    """Follow a job until it ends: progress (step/total, steps/s, latest loss and metrics)."""
    from kiln.cli.results import exit_for, show_job

    job = wait_for_job(app, job_id, timeout)
    show_job(app, job.id, as_json)
    sys.exit(exit_for(job.status))

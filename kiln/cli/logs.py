"""`jobs logs ID [--follow] [--tail N]`: a job's own log, printed, or followed while it runs."""

from __future__ import annotations

import sys
import time

import click

from kiln.cli.app import App, jobs
from kiln.cli.complete import job_ids
from kiln.reader import ENDED, LOG_PAGE, LogLine


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new lines while the job runs; exit when it ends"
                   " (0: it succeeded, 1: it failed or was cancelled).")  # fmt: skip
@click.option("--tail", type=click.IntRange(1, LOG_PAGE), default=None, metavar="N",
              help=f"Only the last N lines (at most {LOG_PAGE}).")  # fmt: skip
@click.pass_obj
def logs(app: App, job_id: str, follow: bool, tail: int | None) -> None:
    """A job's own log: what its model printed, the warnings raised while it ran, and Kiln's
    lines about it (claimed, checkpoints, how it ended); how each attempt ended goes to stderr.
    The log keeps the first and last KILN_JOB_LOG_BYTES / 2 of a job's lines."""
    from kiln.cli.results import exit_for

    client = app.client
    job = client.job_record(job_id)
    for attempt in client.attempts(job.id):
        ended = f"{attempt.outcome or 'running'}" + (f": {attempt.error}" if attempt.error else "")
        app.say(f"attempt {attempt.number} on {attempt.worker} ({attempt.host}): {ended}")
    page = client.log_page(job.id, tail=tail)
    after = _echo(page.lines, None)
    while page.more and tail is None:
        page = client.log_page(job.id, after)
        after = _echo(page.lines, after)
    if after is None:
        _nothing_stored(app, job.id, page.status, dict(job.info or {}), follow)
    if not follow:
        return
    # The status is read before the lines of each page: once it says ended and no more lines
    # follow, every line the job wrote has been printed.
    while not (page.status in ENDED and not page.more):
        if not page.more:
            time.sleep(app.settings.poll_interval_s)
        page = client.log_page(job.id, after)
        after = _echo(page.lines, after)
    sys.exit(exit_for(page.status))


def _echo(lines: list[LogLine], after: int | None) -> int | None:
    for line in lines:
        click.echo(line.text)
    return lines[-1].seq if lines else after


def _nothing_stored(app: App, job_id: str, status: str, info: dict[str, object],
                    follow: bool) -> None:  # fmt: skip
    """No line stored: a job from before job logs keeps its model file's output in its info."""
    from kiln.jobinfo import JobInfo

    output = JobInfo.model_validate(info).output
    if output:
        click.echo(output, nl=not output.endswith("\n"))
    elif status in ENDED:
        app.say(f"job {job_id} kept no log lines (a worker keeps Kiln's own lines about a job"
                " at its --loglevel INFO, the default)")  # fmt: skip
    elif not follow:
        app.say(f"job {job_id} is {status}: its log has no lines yet (try --follow)")

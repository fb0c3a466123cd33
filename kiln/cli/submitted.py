"""What `kiln submit` prints of the jobs it created, or, with --wait, of how they ended."""

from __future__ import annotations

import sys
from typing import Any

from kiln.cli.app import App


def report_submitted(
    app: App, created: list[Any], wait: bool, timeout: float | None, as_json: bool
) -> None:
    """Print the new job ids (or wait for the jobs to end, in order, and show them)."""
    from kiln.cli.results import exit_for, show_job
    from kiln.cli.watch import wait_for_job

    def where(job: Any) -> str:
        if job.status == "waiting" and job.depends_on is not None:
            return f"job {job.id} ({job.kind}) waiting after {job.depends_on}"
        if job.status == "waiting":  # an MCMC job: its chains run first, as units of work
            return f"job {job.id} ({job.kind}) waiting for its chains on `{job.queue}`"
        return f"job {job.id} ({job.kind}) {job.status} on `{job.queue}`"

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
        app.emit([app.client.job(f.id) for f in finals], as_json=True)
    else:
        for final in finals:
            show_job(app, final.id, as_json)
    worst = next((f for f in finals if f.status != "succeeded"), finals[-1])
    sys.exit(exit_for(worst.status))

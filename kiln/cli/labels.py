"""`kiln tag`: change a job's (or a sweep's and its members') tags after it was submitted."""

from __future__ import annotations

import click

from kiln.cli.app import App, jobs
from kiln.errors import SpecError


@jobs.command()
@click.argument("job_id", metavar="ID")
@click.argument("tags", nargs=-1, metavar="KEY=VALUE...")
@click.option("--remove", "remove", multiple=True, metavar="KEY", help="Remove a tag; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the tags as a JSON object.")
@click.pass_obj
def tag(app: App, job_id: str, tags: tuple[str, ...], remove: tuple[str, ...],
        as_json: bool) -> None:  # fmt: skip
    """Set or remove tags of a job, or of a sweep and all its members (by id or name).

    \b
    kiln tag rugged-baseline study=rugged reviewed=yes
    kiln tag SWEEP_ID study=rugged --remove draft
    """
    if not tags and not remove:
        raise SpecError("give KEY=VALUE tags to set or --remove KEY", "tags")
    now = app.client.tag(job_id, list(tags), remove)
    if as_json:
        app.emit(now, as_json=True)
    else:
        app.emit(", ".join(f"{k}={v}" for k, v in now.items()) or "(no tags)")

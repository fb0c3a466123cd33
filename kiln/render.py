"""Output helpers: rows as a rich table, CSV or JSON; a job as a dict."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from kiln.reader import JobRecord


def job_to_dict(job: JobRecord, attempts: Sequence[Any] = ()) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    duration = None
    if job.started_at and job.finished_at:
        duration = round((job.finished_at - job.started_at).total_seconds(), 3)
    return {
        "id": job.id,
        "name": job.name,
        "tags": dict(job.tags),
        "continued_from": job.continued_from,
        "kind": job.kind,
        "status": job.status,
        "model": job.model,
        "queue": job.queue,
        "priority": job.priority,
        "progress": {"step": job.step, "total": job.total_steps},
        "last_loss": job.last_loss,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "duration_s": duration,
        "attempts": job.attempts,
        "worker": job.worker,
        "error": job.error,
        "dataset_id": job.dataset_id,
        "depends_on": job.depends_on,
        "spec": job.spec,
        "info": job.info,
        "attempt_log": [
            {
                "number": a.number,
                "worker": a.worker,
                "host": a.host,
                "pid": a.pid,
                "device": a.device,
                "started_at": iso(a.started_at),
                "ended_at": iso(a.ended_at),
                "outcome": a.outcome,
                "error": a.error,
            }
            for a in attempts
        ],
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def emit_rows(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, title: str | None = None
) -> None:
    """Print rows to stdout as `table` (rich), `csv` or `json` (a list of objects)."""
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            left = column in ("site", "id")
            table.add_column(column, justify="left" if left else "right", no_wrap=left)
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        import sys

        # On a terminal, its width; piped, the table's own width (nothing cut off).
        width = max(100, Console().width) if sys.stdout.isatty() else 10_000
        Console(width=width).print(table)


FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")

"""`jobs workers` and `jobs stats`: who is alive and what the queues hold."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from kiln.cli.app import App, jobs
from kiln.render import JSON, emit_rows

if TYPE_CHECKING:
    from kiln.reader import WorkerView

STATUSES = ("waiting", "queued", "running", "succeeded", "failed", "cancelled")


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = (datetime.now(UTC) - moment).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


@jobs.command()
@click.option("--all", "include_dead", is_flag=True, help="Also workers that stopped or died.")
@JSON
@click.pass_obj
def workers(app: App, include_dead: bool, as_json: bool) -> None:
    """Workers: alive or not, queues, device, last heartbeat, and the job each runs."""
    views = app.client.workers(include_dead)
    if as_json:
        app.emit([_view_dict(v) for v in views], as_json=True)
        return
    if not views:
        app.say("no live worker; start one with `jobs worker --queues cpu`")
    emit_rows(
        ["name", "alive", "queues", "device", "host", "pid", "last heartbeat", "running", "step"],
        [[v.name, "yes" if v.alive else "no", ",".join(v.queues), v.device, v.host, v.pid,
          _ago(v.last_heartbeat), v.running or "-", v.progress or "-"] for v in views],
        "table",
    )  # fmt: skip


def _view_dict(v: WorkerView) -> dict[str, object]:
    out: dict[str, object] = {}
    for key in v.__slots__:
        value = getattr(v, key)
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


@jobs.command()
@JSON
@click.pass_obj
def stats(app: App, as_json: bool) -> None:
    """Jobs by queue and status, live workers per queue, and the oldest queued job's age."""
    report = app.client.queue_stats()
    counts, oldest, alive = report.counts, report.oldest_queued, report.workers
    queues = sorted({*counts, *(q for v in alive for q in v.queues)})
    live = {q: sum(q in v.queues for v in alive) for q in queues}
    if as_json:
        app.emit(
            {q: {"jobs": {s: counts.get(q, {}).get(s, 0) for s in STATUSES},
                 "live_workers": live[q],
                 "oldest_queued": oldest[q].isoformat() if q in oldest else None}
             for q in queues},
            as_json=True,
        )  # fmt: skip
        return
    emit_rows(
        ["queue", *STATUSES, "live workers", "oldest queued"],
        [[q, *(counts.get(q, {}).get(s, 0) for s in STATUSES), live[q],
          _ago(oldest.get(q))] for q in queues],
        "table",
    )  # fmt: skip


@jobs.command()
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=9464, show_default=True,
              help="Prometheus metrics at http://HOST:PORT/metrics; 0: a free port.")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address to serve metrics on (0.0.0.0 inside a container).")  # fmt: skip
@click.option("--no-metrics", is_flag=True, help="Run the reaper only.")
@click.option("--once", is_flag=True, help="One reaper pass, print what it did, and exit.")
@click.pass_obj
def scheduler(app: App, metrics_port: int, metrics_host: str, no_metrics: bool,
              once: bool) -> None:  # fmt: skip
    """Run the reaper and the Prometheus metrics endpoint [env: KILN_DATABASE_URL, KILN_BROKER_URL].

    Every worker runs the reaper too (one pass at a time fleet-wide), so this process is
    optional: it adds the metrics endpoint and keeps jobs moving when no worker is up.
    """
    import threading

    from worker.broker import BrokerView
    from worker.reaping import make_reaper, reaper_loop

    sessions = app.sessions
    if once:
        report = make_reaper(sessions, app.celery, app.settings).run_once()
        app.emit({"requeued": report.requeued, "failed": report.failed, "resent": report.resent,
                  "errors": report.errors}, as_json=True)  # fmt: skip
        return
    server = None
    if not no_metrics:
        from kiln.metrics import start_metrics_server
        from scheduler.routing import QUEUES

        broker = BrokerView(app.celery)
        try:
            server = start_metrics_server(
                sessions, port=metrics_port, host=metrics_host,
                alive_s=app.settings.worker_alive_s,
                broker_depths=lambda: broker.depths(QUEUES),
            )  # fmt: skip
        except OSError as e:
            app.abort(f"--metrics-port {metrics_port}: cannot listen on {metrics_host}: {e}", 2)
        app.say(f"metrics: http://{metrics_host}:{server.port}/metrics")
    app.say(f"scheduler: reaper every {app.settings.reaper_interval_s:g} s; Ctrl-C stops it")
    stop = threading.Event()
    try:
        reaper_loop(stop, sessions, app.celery, app.settings)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if server is not None:
            server.close()

"""`jobs cancel`, `jobs db upgrade`, `jobs worker`: act on jobs, the schema and the fleet."""

from __future__ import annotations

import logging
import os
import socket
import threading

import click

from kiln.cli.app import BAD_INPUT, UNAVAILABLE, App, jobs
from kiln.cli.complete import job_ids
from kiln.redact import redact
from kiln.settings import EMBEDDED

log = logging.getLogger(__name__)


@jobs.command()
@click.argument("job_id", shell_complete=job_ids)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def cancel(app: App, job_id: str, as_json: bool) -> None:
    """Cancel a job: a queued one never starts; a running one stops at its next step batch."""
    job = app.client.job_record(job_id)
    status = app.client.cancel(job.id)
    if as_json:
        app.emit({"id": job.id, "status": status, "cancel_requested": True}, as_json=True)
    elif status == "running":
        app.emit(f"job {job.id}: cancel requested; it stops within a few seconds")
    else:
        app.emit(f"job {job.id}: {status}")


@jobs.group()
def db() -> None:
    """Database schema."""


@db.command()
@click.pass_obj
def upgrade(app: App) -> None:
    """Apply Alembic migrations up to head, then rewrite fitted states an older Kiln pickled
    into the pickle-free format [env: KILN_DATABASE_URL]."""
    from db.migrate import upgrade_to_head

    upgrade_to_head(app.settings.db_url)
    app.say(f"database {redact(app.settings.db_url)} is at the current schema")
    from worker.states import convert_legacy_states

    converted = convert_legacy_states(app.sessions)
    if converted.rewritten:
        app.say(f"rewrote {converted.rewritten} pickled fitted state(s) as named arrays + JSON")
    if converted.unreadable:
        app.say(f"{len(converted.unreadable)} legacy fitted state(s) could not be read and stay"
                f" as they were (fits {', '.join(converted.unreadable[:10])})")  # fmt: skip


@jobs.command()
@click.option("--queues", default="cpu", show_default=True,
              help="Comma-separated: cpu, gpu. With KILN_ALLOW_USER_CODE on, each one's .user"
              " queue too (jobs that run users' model files).")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Jobs at once (processes); GPU workers always run one.")  # fmt: skip
@click.option("--name", default=None, help="Worker name (default: QUEUES-PID@HOST).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_obj
def worker(app: App, queues: str, concurrency: int, name: str | None, loglevel: str) -> None:
    """Run a worker that takes jobs from the queues [env: KILN_BROKER_URL, KILN_DATABASE_URL]."""
    from db.workers import heartbeat_worker, register_worker, stop_worker

    logging.getLogger().setLevel(loglevel.upper())  # lifecycle lines: claimed, ready, failed
    from scheduler.routing import QUEUES, USER_SUFFIX, worker_queues

    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(QUEUES))
    if not wanted or unknown:
        app.abort(f"--queues: unknown queue {unknown or wanted} (have: {', '.join(QUEUES)})", 2)
    user_code = app.settings.runs_user_code
    if not user_code and any(q.endswith(USER_SUFFIX) for q in wanted):
        app.abort("--queues: the .user queues hold jobs that run users' model files; this worker"
                  " does not run them (KILN_ALLOW_USER_CODE is off)", 2)  # fmt: skip
    wanted = worker_queues(wanted, user_code)
    host = socket.gethostname()
    name = name or f"{'-'.join(q for q in wanted if '.' not in q)}-{os.getpid()}"
    device = "cpu"
    if "gpu" in wanted or "gpu.user" in wanted:
        import torch  # the main process only: GPU workers never fork (solo pool)

        if not torch.cuda.is_available():
            app.abort("--queues gpu: this host has no CUDA device", UNAVAILABLE)
        device, concurrency = "cuda", 1
    if user_code:  # before the pool forks: sandboxes may not read this process's environ
        from worker.sandbox.process import protect_worker

        protect_worker()
    os.environ["KILN_WORKER_NAME"] = name
    os.environ["KILN_WORKER_DEVICE"] = device
    # Import the heavy parts once, before any fork: the first svi.step otherwise pays ~1.8 s.
    import torch._dynamo  # noqa: F401

    import inference.fit  # noqa: F401
    import inference.svi  # noqa: F401

    sessions = app.sessions  # the database first: unreachable or behind is a clear error
    try:  # then the broker: fail now, clearly, rather than have Celery retry it forever
        with app.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, interval_start=0.5)
    except Exception as e:
        app.abort(f"broker {redact(app.celery.conf.broker_url)} unreachable: {e}", UNAVAILABLE)
    with sessions() as session:
        register_worker(session, name=name, host=host, pid=os.getpid(), queues=wanted,
                        device=device, slots=concurrency)  # fmt: skip
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(app.settings.heartbeat_s):
            try:
                with sessions() as session:
                    heartbeat_worker(session, name)
            except Exception as e:  # the database may blink; the next beat retries
                log.warning("worker %s: heartbeat failed: %s", name, e)

    threading.Thread(target=beat, name="kiln-heartbeat", daemon=True).start()
    from worker.reaping import reaper_loop

    threading.Thread(
        target=reaper_loop, args=(stop, sessions, app.celery, app.settings),
        name="kiln-reaper", daemon=True,
    ).start()  # fmt: skip
    app.say(f"worker {name}: queues {','.join(wanted)}, device {device}, concurrency {concurrency}")
    try:
        app.celery.worker_main([
            "worker", f"--queues={','.join(wanted)}", f"--concurrency={concurrency}",
            f"--hostname={name}@{host}", f"--pool={'solo' if concurrency == 1 else 'prefork'}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle",
        ])  # fmt: skip
    finally:
        stop.set()
        with sessions() as session:
            stop_worker(session, name)


@jobs.group()
def broker() -> None:
    """The embedded broker: a redis-server in KILN_HOME that the first command needing it
    starts and leaves running (queued messages are kept on disk)."""


@broker.command("status")
@click.pass_obj
def broker_status(app: App) -> None:
    """Whether the embedded broker of KILN_HOME runs, its pid and socket."""
    from worker.embedded import embedded_pid, socket_path

    home = app.settings.home
    if app.settings.broker_url != EMBEDDED:
        app.emit(f"not embedded: KILN_BROKER_URL is {redact(app.settings.broker_url)}")
        return
    pid = embedded_pid(home)
    where = f"socket {socket_path(home)}, log {home / 'redis.log'}"
    app.emit(f"running (pid {pid}; {where})" if pid else f"not running ({where})")


@broker.command("stop")
@click.pass_obj
def broker_stop(app: App) -> None:
    """Stop the embedded broker of KILN_HOME (workers using it stop too; the next command
    that needs it starts it again, with the queued messages it kept)."""
    from worker.embedded import embedded_pid, stop_embedded_broker

    if app.settings.broker_url != EMBEDDED:
        app.abort(f"not embedded: KILN_BROKER_URL is {redact(app.settings.broker_url)}; stop"
                  " that server where it runs", BAD_INPUT)  # fmt: skip
    pid = embedded_pid(app.settings.home)
    if pid is None:
        app.emit("not running")
        return
    if not stop_embedded_broker(app.settings.home):
        app.abort(f"the embedded broker (pid {pid}) did not stop within 10 s", UNAVAILABLE)
    app.emit(f"stopped (pid {pid})")

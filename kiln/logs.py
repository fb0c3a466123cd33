"""Structured logs: configure_logging(), and job_context() that puts a job id on every line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from kiln.redact import redact

__all__ = ["JobContextFilter", "configure_logging", "current_job_id", "job_context"]

_job_id: ContextVar[str | None] = ContextVar("kiln_job_id", default=None)
_exceptions = logging.Formatter()  # formats exc_info the way every Formatter does


def current_job_id() -> str | None:
    """The id of the job this thread (or task) is running, or None outside a job."""
    return _job_id.get()


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every record logged inside the block carries `job_id` (restored afterwards, so
    nesting and reuse of a worker process for the next job are safe)."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class JobContextFilter(logging.Filter):
    """Puts `job_id` on every record and masks URL passwords in its message and traceback.

    It sits on the handler, not on a logger, so it sees every record that reaches the
    handler, Celery's and other libraries' included. A `job_id` given with `extra=` wins.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _job_id.get()
        try:
            message = record.getMessage()
        except Exception:  # a bad %-call: let the handler report it as logging always does
            return True
        # Rendered once and the args dropped, so no formatter sees the raw values.
        record.msg, record.args = redact(message), None
        if record.exc_info:
            # Recomputed, not reused: another handler may have cached it unredacted.
            record.exc_text = _exceptions.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(job)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        record.job = f" job={job_id}" if job_id is not None else ""
        return super().format(record)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "job_id": getattr(record, "job_id", None),
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, default=str)


def configure_logging(verbosity: int = 0, as_json: bool = False) -> None:
    """Log to stderr: WARNING by default, INFO with -v, DEBUG with -vv; one JSON object per
    line with `as_json`. The only place that adds handlers; entry points call it."""
    level = logging.WARNING - 10 * min(verbosity, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if as_json else _TextFormatter())
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

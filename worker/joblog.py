"""JobLog: a running job's own log (what its model printed, the warnings raised while it ran,
Kiln's lines about it), numbered, capped, redacted, and written by the Sink's flushes.

One worker process runs one job at a time (prefetch 1), so the warnings hook and the logging
handler that `capturing` installs for the job's duration see only that job; the handler still
checks each record's job id, since other threads (the lease keeper) log too.
"""

from __future__ import annotations

import codecs
import logging
import threading
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TextIO

from sqlalchemy.orm import Session

from db.joblogs import LogRow, LogState, dropped_note, write_lines
from db.models import utcnow
from kiln.logs import current_job_id
from kiln.redact import redact

MAX_LINE_CHARS = 4000  # a longer line is cut, and says by how much
_current: ContextVar[JobLog | None] = ContextVar("kiln_job_log", default=None)
_exceptions = logging.Formatter()


def current_log() -> JobLog | None:
    """The log of the job this thread runs (set by `capturing`), or None outside a job."""
    return _current.get()


@dataclass(frozen=True, slots=True)
class Batch:
    """What one flush writes: new lines, the lines to delete, the dropped-note."""

    rows: list[LogRow]
    drop: tuple[int, int] | None  # (after, upto]: the tail lines the cap pushed out
    note: tuple[int, str] | None
    version: int


class JobLog:
    """Lines in order, from any thread. The first half of `cap` bytes is kept as it comes;
    after it, the last half: an older tail line is dropped (from memory, or deleted by the
    next flush) and a note where the head ends says how much is gone."""

    def __init__(self, job_id: str, cap: int, secrets: list[str], state: LogState) -> None:
        self.job_id, self.cap, self.secrets = job_id, cap, secrets
        self._lock = threading.Lock()
        self._pending: dict[int, LogRow] = {}
        self._next = state.next_seq
        self._head = state.head_bytes
        self._marker = state.marker_seq
        self._dropped_lines, self._dropped_bytes = state.dropped_lines, state.dropped_bytes
        self._tail: deque[tuple[int, int]] = deque(state.tail)
        self._tail_bytes = sum(n for _, n in self._tail)
        self._drop_upto: int | None = None
        self._version = 0  # bumped when the note or the dropped range changes
        self._written_version = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    # -- adding --------------------------------------------------------------------------

    def add(self, stream: str, text: str) -> None:
        """Each line of `text` (redacted, cut at MAX_LINE_CHARS) on `stream`."""
        with self._lock:
            for line in text.split("\n"):
                self._add_line(stream, line.rstrip("\r"))

    def feed_output(self, chunk: bytes) -> None:
        """A chunk of the sandbox's stdout and stderr: whole lines now, the rest when it ends."""
        with self._lock:
            lines = (self._partial + self._decoder.decode(chunk)).split("\n")
            self._partial = lines.pop()
            if len(self._partial) > MAX_LINE_CHARS:  # no newline coming: keep it bounded
                lines.append(self._partial)
                self._partial = ""
            for line in lines:
                self._add_line("output", line.rstrip("\r"))

    def end_output(self) -> None:
        """The sandbox ended: its last line, if it printed no newline after it."""
        with self._lock:
            rest = self._partial + self._decoder.decode(b"", final=True)
            self._partial = ""
            if rest:
                self._add_line("output", rest.rstrip("\r"))

    def _add_line(self, stream: str, line: str) -> None:
        if len(line) > MAX_LINE_CHARS:
            line = f"{line[:MAX_LINE_CHARS]}... [{len(line) - MAX_LINE_CHARS} more characters]"
        line = redact(line, self.secrets)
        size = len(line.encode()) + 1
        half = self.cap // 2
        if self._marker is None and self._head + size <= half:
            self._head += size
            self._store(stream, line)
            return
        if self._marker is None:  # the head is full: the note goes here, said or not
            self._marker, self._next = self._next, self._next + 1
            self._version += 1
        self._tail.append((self._store(stream, line), size))
        self._tail_bytes += size
        while self._tail_bytes > self.cap - half:
            seq, gone = self._tail.popleft()
            self._tail_bytes -= gone
            self._dropped_lines, self._dropped_bytes = (
                self._dropped_lines + 1, self._dropped_bytes + gone
            )  # fmt: skip
            self._pending.pop(seq, None)  # never written: nothing to delete (unless in flight)
            self._drop_upto = seq
            self._version += 1

    def _store(self, stream: str, line: str) -> int:
        seq, self._next = self._next, self._next + 1
        self._pending[seq] = LogRow(seq, utcnow(), stream, line)
        return seq

    # -- writing -------------------------------------------------------------------------

    def write(self, session: Session) -> Batch:
        """Write what is new in the caller's transaction (no commit); `written(batch)` once
        it committed. A failed commit keeps everything for the next flush."""
        with self._lock:
            note, drop = None, None
            if self._marker is not None and self._version != self._written_version:
                said = (dropped_note(self._dropped_lines, self._dropped_bytes, self.cap)
                        if self._dropped_lines else "")  # fmt: skip
                note = (self._marker, said)
                if self._drop_upto is not None:
                    drop = (self._marker, self._drop_upto)
            batch = Batch(list(self._pending.values()), drop, note, self._version)
        write_lines(session, self.job_id, batch.rows, batch.drop, batch.note)
        return batch

    def written(self, batch: Batch) -> None:
        with self._lock:
            for row in batch.rows:
                self._pending.pop(row.seq, None)
            self._written_version = max(self._written_version, batch.version)


class _Handler(logging.Handler):
    """Takes the job's own records at INFO and above (Kiln's lines: claimed, checkpoint,
    finished or failed and why); `py.warnings` records are the warnings hook's already."""

    def __init__(self, log: JobLog) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "py.warnings":
            return
        if (getattr(record, "job_id", None) or current_job_id()) != self.log.job_id:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad %-call: the worker's own log reports it
            return
        if record.exc_info:
            message += "\n" + _exceptions.formatException(record.exc_info)
        self.log.add("kiln", f"{record.levelname} {message}")


@contextmanager
def capturing(log: JobLog) -> Iterator[JobLog]:
    """For the block: Kiln's log records of this job and every warning shown in this process
    go to `log` (warnings still reach the worker's log too)."""
    handler = _Handler(log)
    root = logging.getLogger()
    token = _current.set(log)
    root.addHandler(handler)
    try:
        with warnings.catch_warnings():  # restores showwarning and the filters afterwards
            shown = warnings.showwarning

            def hook(message: Warning | str, category: type[Warning], filename: str,
                     lineno: int, file: TextIO | None = None, line: str | None = None,
                     ) -> None:  # fmt: skip
                text = warnings.formatwarning(message, category, filename, lineno, line)
                log.add("warning", text.rstrip("\n"))
                shown(message, category, filename, lineno, file, line)

            warnings.showwarning = hook
            yield log
    finally:
        root.removeHandler(handler)
        _current.reset(token)


def write_rest(session: Session) -> None:
    """In a job's last transaction: what its log holds still (no commit). Kept in memory
    until then: if that commit fails, the finish that follows writes it again."""
    log = current_log()
    if log is not None:
        log.end_output()
        log.write(session)

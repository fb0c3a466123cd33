"""A job's own log in the database: write a flush's lines, read a page, and the state a new
attempt continues from (the numbering and the cap's bookkeeping)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.models import JobLog, as_utc
from db.results import insert_new_rows

DROPPED = "dropped"  # the stream of the one row that says how much of a capped log was dropped
_COUNTS = re.compile(r"^\[(\d+) lines \((\d+) bytes\)")


@dataclass(frozen=True, slots=True)
class LogRow:
    """One stored line: its number in the job's log, when, which stream, the text."""

    seq: int
    at: datetime
    stream: str
    text: str


@dataclass(frozen=True, slots=True)
class LogState:
    """Where a job's stored log stands, for the next attempt to go on from: the next number,
    the bytes of its head, and, once the head is full, the dropped-note's number, the counts
    it says, and the (seq, bytes) of each tail line after it."""

    next_seq: int
    head_bytes: int
    marker_seq: int | None
    dropped_lines: int
    dropped_bytes: int
    tail: list[tuple[int, int]]


def dropped_note(lines: int, size: int, cap: int) -> str:
    """The text of the `dropped` row (parsed back by log_state: keep its start)."""
    return (f"[{lines} lines ({size} bytes) dropped here: a job's log keeps its first and last"
            f" {cap // 2} bytes (KILN_JOB_LOG_BYTES on the worker)]")  # fmt: skip


def write_lines(
    session: Session, job_id: str, rows: Sequence[LogRow], drop: tuple[int, int] | None,
    note: tuple[int, str] | None,
) -> None:  # fmt: skip
    """Add `rows`, delete the lines numbered in `drop` (after, upto]: the oldest of the tail,
    which the cap pushed out), and set the dropped-note (seq, text). Idempotent, for a flush
    retried after a lost commit reply. No commit: the caller's transaction (the Sink's
    flush, the job's finish) holds it."""
    if drop is not None:
        after, upto = drop
        session.execute(delete(JobLog).where(JobLog.job_id == job_id, JobLog.seq > after,
                                             JobLog.seq <= upto))  # fmt: skip
    if note is not None:
        seq, text = note
        session.execute(delete(JobLog).where(JobLog.job_id == job_id, JobLog.seq == seq))
        session.add(JobLog(job_id=job_id, seq=seq, stream=DROPPED, text=text))
        session.flush()
    insert_new_rows(
        session, JobLog,
        [{"job_id": job_id, "seq": r.seq, "at": r.at, "stream": r.stream, "text": r.text}
         for r in rows],
    )  # fmt: skip


def log_rows(
    session: Session, job_id: str, after: int | None = None, limit: int = 1000,
    tail: int | None = None,
) -> list[LogRow]:  # fmt: skip
    """The job's lines by number: those after `after` (the first `limit`), or the last `tail`.
    A dropped-note that says nothing yet (the head just filled) is left out."""
    query = select(JobLog).where(JobLog.job_id == job_id)
    query = query.where((JobLog.stream != DROPPED) | (JobLog.text != ""))
    if after is not None:
        query = query.where(JobLog.seq > after)
    if tail is not None:
        found = list(session.scalars(query.order_by(JobLog.seq.desc()).limit(tail)))[::-1]
    else:
        found = list(session.scalars(query.order_by(JobLog.seq).limit(limit)))
    return [LogRow(r.seq, as_utc(r.at), r.stream, r.text) for r in found]


def log_state(session: Session, job_id: str, cap: int) -> LogState:
    """Where the job's stored log stands (empty for a first attempt)."""
    last = session.scalar(select(func.max(JobLog.seq)).where(JobLog.job_id == job_id))
    marker = session.scalars(
        select(JobLog).where(JobLog.job_id == job_id, JobLog.stream == DROPPED)
    ).first()
    head = select(func.coalesce(func.sum(func.length(JobLog.text) + 1), 0)).where(
        JobLog.job_id == job_id
    )
    if marker is None:
        return LogState((last + 1) if last is not None else 0, int(session.scalar(head) or 0),
                        None, 0, 0, [])  # fmt: skip
    counts = _COUNTS.match(marker.text)
    lines, size = (int(counts[1]), int(counts[2])) if counts else (0, 0)
    after = session.execute(
        select(JobLog.seq, JobLog.text)
        .where(JobLog.job_id == job_id, JobLog.seq > marker.seq)
        .order_by(JobLog.seq)
    )
    tail = [(int(seq), len(text.encode()) + 1) for seq, text in after]
    head_bytes = int(session.scalar(head.where(JobLog.seq < marker.seq)) or 0)
    return LogState(int(last) + 1 if last is not None else marker.seq + 1, min(head_bytes, cap),
                    marker.seq, lines, size, tail)  # fmt: skip

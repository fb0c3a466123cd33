"""JobContext: what a runner is given for one claimed job (typed spec, data, info, runtime)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from kiln.jobinfo import JobInfo
from kiln.settings import Settings
from kiln.specs import BaseSpec
from worker.runtime import Runtime

S = TypeVar("S", bound=BaseSpec)


@dataclass(frozen=True, slots=True)
class DataBlob:
    """A job's stored data set: its name (a file name or `digits`), format and bytes."""

    name: str
    format: str
    content: bytes


@dataclass(slots=True)
class JobContext(Generic[S]):
    """One claimed attempt of one job. `info` is the job's typed info: the Sink and the runner
    add to it, and it is stored with the job's final status."""

    job_id: str
    spec: S
    attempt: int
    rt: Runtime
    info: JobInfo
    data: DataBlob | None = None
    source_id: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.rt.sessions

    @property
    def settings(self) -> Settings:
        return self.rt.settings

    @property
    def worker(self) -> str:
        return self.rt.name

    def seconds(self) -> float:
        """Seconds since the job was claimed, rounded for the record."""
        return round(time.monotonic() - self.started, 3)

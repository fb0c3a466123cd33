"""Runner: how a worker runs one job kind (prepare, run yielding events, store)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy.orm import Session

from inference.events import Event
from kiln.specs import BaseSpec
from worker.context import JobContext

S = TypeVar("S", bound=BaseSpec)
P = TypeVar("P")


class Runner(ABC, Generic[S, P]):
    """One job kind on the worker side.

    `execute_job` claims the job, parses its spec once and then calls, in order:
    `prepare` (build the problem: read data, load a fitted state; may read the database),
    `run` (the inference: a generator of events, which the Sink writes in batches and which
    stops when the user cancels), and `store` (write the results into the session; the job's
    final status and info are committed with them, in one transaction).
    """

    kind: ClassVar[str]

    @abstractmethod
    def prepare(self, ctx: JobContext[S]) -> P:
        """Everything the run needs, built before the first event."""

    def run(self, ctx: JobContext[S], prepared: P) -> Iterator[Event]:
        """The inference, as events (a prediction may have none)."""
        return iter(())

    def on_flush(self, ctx: JobContext[S], session: Session, step: int | None) -> None:
        """Called in each progress flush's transaction, before it commits (default: nothing)."""

    @abstractmethod
    def store(self, ctx: JobContext[S], prepared: P, session: Session) -> None:
        """Add the results to `session`; the caller commits them with the final status."""


AnyRunner = Runner[Any, Any]

"""Reader: what the Client and the `jobs` CLI read back, as plain typed values (one path for both).

Every method opens its own session, resolves a job id prefix like `jobs show` does (NotFound
when there is no such job), and returns values that outlive the session: dataclasses, lists,
dicts and NumPy arrays, never database rows. The Client builds its pandas and ArviZ views
on these; the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kiln.settings import Settings

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.orm import Session, sessionmaker

    # Re-exported (`as`): the CLI names these types without importing db.
    from db.results import SampleSummary as SampleSummary
    from db.sweeps import SweepView as SweepView
    from db.workers import WorkerView as WorkerView
    from kiln.export import JobResults
    from kiln.querytree import Expr, Field, OrderKey
    from kiln.records import SiteStats
    from kiln.sweepsummary import SweepGroups

ENDED = ("succeeded", "failed", "cancelled")
LOG_PAGE = 1000  # log lines a read returns at most (the API's page too)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One try at running a job: who, where, when, and how it ended."""

    number: int
    worker: str
    host: str
    pid: int
    device: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as stored: its state, progress, timings, spec and typed-info document."""

    id: str
    kind: str
    status: str
    model: str
    queue: str
    priority: int
    step: int
    total_steps: int
    last_loss: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    worker: str | None
    error: str | None
    dataset_id: str | None
    depends_on: str | None
    sweep_id: str | None
    spec: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    name: str | None = None  # --name: unique per owner, usable wherever an id is
    tags: dict[str, str] = field(default_factory=dict)  # --tag key=value
    continued_from: str | None = None  # the fit this one continued (--continue)

    @property
    def is_terminal(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.status in ENDED


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a job's own log: its number (for `after=`), when, which stream (`output`:
    what the model printed; `warning`; `kiln`: Kiln's lines; `dropped`: where a capped log
    dropped lines), and the text."""

    seq: int
    at: datetime
    stream: str
    text: str


@dataclass(frozen=True, slots=True)
class LogPage:
    """Lines of a job's log, the job's status read just before them (an ended status and
    no `more` mean the log is complete), and whether more lines follow the page."""

    status: str
    lines: list[LogLine]
    more: bool


@dataclass(frozen=True, slots=True)
class SweepSummary:
    """A sweep in `jobs sweep list`: its status and member counts by status."""

    id: str
    status: str
    model: str
    members: int
    batches: int
    counts: dict[str, int]
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Jobs by queue and status, the oldest queued job's creation time by queue, live workers."""

    counts: dict[str, dict[str, int]]
    oldest_queued: dict[str, datetime]
    workers: list[WorkerView]


def parse_search(
    where: str | None, order_by: str | None, columns: str | None
) -> tuple[Expr | None, tuple[OrderKey, ...], tuple[Field, ...]]:
    """The parsed parts of a search (SpecError for one that does not parse): checked here
    before any request, so directly and over the API the same input fails the same way."""
    from kiln.query import parse_columns, parse_order, parse_query

    return (parse_query(where) if where else None, parse_order(order_by) if order_by else (),
            parse_columns(columns) if columns else ())  # fmt: skip


def job_record(job: Any, tags: dict[str, str] | None = None) -> JobRecord:
    """A job row as a JobRecord (while its session is open), with its tags (db.labels.tags_of)."""
    return JobRecord(
        id=job.id, kind=job.kind, status=job.status, model=job.model, queue=job.queue,
        priority=job.priority, step=job.step, total_steps=job.total_steps,
        last_loss=job.last_loss, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, attempts=job.attempts, worker=job.worker, error=job.error,
        dataset_id=job.dataset_id, depends_on=job.depends_on, sweep_id=job.sweep_id,
        spec=job.spec, info=job.info, name=job.name, tags=dict(tags or {}),
        continued_from=job.continued_from,
    )  # fmt: skip


class Reader:
    """Reads over `settings` and a database (given by the subclass)."""

    settings: Settings

    def _sessionmaker(self) -> sessionmaker[Session]:
        raise NotImplementedError

    # -- jobs -------------------------------------------------------------------------------

    def job_record(self, job_id: str) -> JobRecord:
        """The job with this id, name or unique id prefix (at least 4 characters)."""
        from db.jobs import get_job
        from db.labels import tags_of

        with self._sessionmaker()() as session:
            job = get_job(session, job_id)
            return job_record(job, tags_of(session, [job.id]).get(job.id))

    def job_records(self, status: str | None = None, limit: int = 20) -> list[JobRecord]:
        """The newest `limit` jobs (with this status, if given), newest first."""
        from db.jobs import list_jobs
        from db.labels import tags_of

        with self._sessionmaker()() as session:
            rows = list_jobs(session, status, limit)
            tags = tags_of(session, [j.id for j in rows])
            return [job_record(j, tags.get(j.id)) for j in rows]

    def search_records(
        self, where: str | None = None, order_by: str | None = None,
        columns: str | None = None, limit: int = 20, offset: int = 0,
        status: str | None = None,
    ) -> list[tuple[JobRecord, dict[str, Any]]]:  # fmt: skip
        """The jobs a query (kiln.query) finds, ordered by `order_by` then newest first, one
        page; with each, the value of every field in `columns` (comma-separated), JSON-ready.
        SpecError for a query, order or column list that does not parse."""
        from db.labels import tags_of
        from db.search import search_jobs

        query, order, fields = parse_search(where, order_by, columns)
        with self._sessionmaker()() as session:
            found = search_jobs(session, query, order, fields, limit=limit, offset=offset,
                                status=status)  # fmt: skip
            tags = tags_of(session, [job.id for job, _ in found])
            return [(job_record(job, tags.get(job.id)), values) for job, values in found]

    def attempts(self, job_id: str) -> list[AttemptRecord]:
        """Every try at running the job, first first."""
        from db.claims import attempts_of
        from db.jobs import get_job

        with self._sessionmaker()() as session:
            rows = attempts_of(session, get_job(session, job_id).id)
            return [
                AttemptRecord(number=a.number, worker=a.worker, host=a.host, pid=a.pid,
                              device=a.device, started_at=a.started_at, ended_at=a.ended_at,
                              outcome=a.outcome, error=a.error)
                for a in rows
            ]  # fmt: skip

    def latest_prediction(self, fit_id: str) -> str | None:
        """The id of the fit's most recent succeeded predict job for its own rows, if any."""
        from db.jobs import get_job, latest_prediction

        with self._sessionmaker()() as session:
            return latest_prediction(session, get_job(session, fit_id).id)

    def log_page(self, job_id: str, after: int | None = None,
                 tail: int | None = None) -> LogPage:  # fmt: skip
        """The job's own log: up to LOG_PAGE lines after line `after`, or its last `tail`."""
        from db.joblogs import log_rows
        from db.jobs import get_job

        with self._sessionmaker()() as session:
            job = get_job(session, job_id)
            status = job.status  # first: lines of an ended job are all stored by then
            rows = log_rows(session, job.id, after, LOG_PAGE + 1,
                            min(tail, LOG_PAGE) if tail else None)  # fmt: skip
        lines = [LogLine(r.seq, r.at, r.stream, r.text) for r in rows]
        return LogPage(status, lines[:LOG_PAGE], len(lines) > LOG_PAGE)

    def log_lines(self, job_id: str, after: int | None = None) -> list[LogLine]:
        """Every line of the job's own log after line `after` (all when None), page by page."""
        lines: list[LogLine] = []
        while True:
            page = self.log_page(job_id, after)
            lines += page.lines
            if not page.more or not page.lines:
                return lines
            after = page.lines[-1].seq

    def logs(self, job_id: str, after: int | None = None) -> str:
        """The job's own log as text, one line each: what its model printed, the warnings
        raised while it ran, Kiln's lines about it. A job stored before job logs existed has
        only what its model file printed (its info's `output`)."""
        from kiln.jobinfo import JobInfo

        lines = self.log_lines(job_id, after)
        if not lines and after is None:
            return JobInfo.model_validate(self.job_record(job_id).info or {}).output or ""
        return "".join(line.text + "\n" for line in lines)

    # -- results ----------------------------------------------------------------------------

    def loss_rows(self, job_id: str, tail: int | None = None,
                  every: int = 1) -> list[tuple[int, float]]:  # fmt: skip
        """(step, loss) by step: of every step, or of the steps that are multiples of `every`,
        and of those only the last `tail` when given."""
        from db.jobs import get_job
        from db.losses import get_loss_page

        with self._sessionmaker()() as session:
            return get_loss_page(session, get_job(session, job_id).id, every=every, tail=tail)

    def metric_rows(
        self, job_id: str, name: str | None = None
    ) -> list[tuple[str, int, int, float]]:
        """(name, step, epoch, value) of every metric (or of one), by step, then name."""
        from db.jobs import get_job
        from db.results import get_metrics

        with self._sessionmaker()() as session:
            return get_metrics(session, get_job(session, job_id).id, name)

    def posterior_stats(self, job_id: str) -> list[SiteStats]:
        """The posterior summary of each latent site, in storage order."""
        from db.jobs import get_job
        from db.results import get_params

        with self._sessionmaker()() as session:
            return get_params(session, get_job(session, job_id).id)

    def site_diagnostics(self, job_id: str) -> dict[str, np.ndarray]:
        """An MCMC job's r_hat, ess_bulk and ess_tail by site: (3, *shape) each."""
        from db.jobs import get_job
        from db.results import get_diagnostics

        with self._sessionmaker()() as session:
            return get_diagnostics(session, get_job(session, job_id).id)

    def sample_summaries(self, job_id: str, site: str | None = None) -> list[SampleSummary]:
        """Every stored site of the job (or one), in storage order, without its draws."""
        from db.jobs import get_job
        from db.results import get_sample_summaries

        with self._sessionmaker()() as session:
            return get_sample_summaries(session, get_job(session, job_id).id, site)

    def draws(self, job_id: str, sites: list[str] | None = None) -> dict[str, np.ndarray]:
        """The stored draws of every site of every kind (or of these sites), in storage order."""
        from db.jobs import get_job
        from db.results import get_draws

        with self._sessionmaker()() as session:
            return get_draws(session, get_job(session, job_id).id, kind=None, sites=sites)

    def results(
        self, job_id: str, id_column: str | None = None, warmup: bool = False
    ) -> JobResults:
        """Everything a succeeded job stored, gathered (what samples, export and plot read);
        with `id_column`, its data rows labelled by that column of its data (kiln.rowlabels);
        with `warmup`, an MCMC fit's warmup draws too (kiln.warmup).

        Raises SpecError for a job that has not succeeded or kept no warmup draws, DataError
        for a bad id_column.
        """
        from kiln.warmup import read_results

        with self._sessionmaker()() as session:
            return read_results(session, job_id, id_column, warmup)

    # -- sweeps -----------------------------------------------------------------------------

    def sweep(self, sweep_id: str, members: bool = True) -> SweepView:
        """The sweep, its status (from its members), its batches and (with `members`) one
        row per member."""
        from db.sweeps import view_sweep

        with self._sessionmaker()() as session:
            return view_sweep(session, sweep_id, with_members=members)

    def sweep_groups(self, sweep_id: str, by: Sequence[str]) -> SweepGroups:
        """The sweep's members grouped by the settings `by`: per group the member count, the
        succeeded count, and mean and sd of the final loss and each site's posterior mean
        (kiln.sweepsummary). Raises SpecError for a key that is not a member setting."""
        from kiln.sweepsummary import summarise_sweep

        return summarise_sweep(self.sweep(sweep_id, members=True), by)

    def sweeps(self, limit: int = 20) -> list[SweepSummary]:
        """The newest `limit` sweeps, newest first."""
        from db.sweeps import list_sweeps

        with self._sessionmaker()() as session:
            return [
                SweepSummary(id=s.id, status=status, model=s.model, members=s.members,
                             batches=s.batches, counts=counts, created_at=s.created_at)
                for s, status, counts in list_sweeps(session, limit)
            ]  # fmt: skip

    # -- the fleet --------------------------------------------------------------------------

    def workers(self, include_dead: bool = False) -> list[WorkerView]:
        """Workers (live ones, or all) with the job each runs, newest heartbeat first."""
        from db.workers import worker_views

        with self._sessionmaker()() as session:
            return worker_views(session, self.settings.worker_alive_s, include_dead)

    def live_workers(self, queue: str | None = None) -> list[str]:
        """The names of the live workers (that serve `queue`, if given)."""
        from db.workers import live_workers

        with self._sessionmaker()() as session:
            return [w.name for w in live_workers(session, queue, self.settings.worker_alive_s)]

    def queue_stats(self) -> QueueStats:
        """Jobs by queue and status, the oldest queued job by queue, and the live workers."""
        from db.stats import job_counts, oldest_queued
        from db.workers import worker_views

        with self._sessionmaker()() as session:
            return QueueStats(
                counts=job_counts(session), oldest_queued=oldest_queued(session),
                workers=worker_views(session, self.settings.worker_alive_s),
            )  # fmt: skip

"""Mapped tables: datasets, sweeps, jobs, attempts, workers, losses, params, samples, fitted state,
checkpoints, API tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, overload

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kiln.labels import MAX_NAME_CHARS, MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# A 64-bit count (steps, bytes): BIGINT, and plain INTEGER on SQLite, whose INTEGER is already
# 64-bit (so migration 0008 need not rebuild SQLite tables; see there).
BigCount = BigInteger().with_variant(Integer(), "sqlite")


MAX_ID_CHARS = 32  # job and sweep ids: 16 hex characters today, the column holds 32


def plausible_id(given: str) -> bool:
    """Whether `given` could be (a prefix of) a job or sweep id: short, no control characters.
    Anything else is simply not found, before a query (PostgreSQL refuses a NUL; SQLite a LIKE
    pattern over 50,000 characters)."""
    return len(given) <= MAX_ID_CHARS and given.isprintable()


def plausible_name(given: str) -> bool:
    """Whether `given` could be a job's or sweep's name (kiln.labels checks what a name may
    be): anything longer or with control characters is not found, before a query."""
    return len(given) <= MAX_NAME_CHARS and given.isprintable()


def shown_id(given: str) -> str:
    """An id as a message may quote it: clipped, control characters escaped."""
    text = given if given.isprintable() else repr(given)[1:-1]
    return text if len(text) <= 40 else text[:40] + "..."


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every datetime Kiln writes is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class JobStatus(StrEnum):
    WAITING = "waiting"  # for the job it depends on (a predict job for its fit); not sent yet
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


TERMINAL = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    # Every Kiln class maps a plain Table (SQLAlchemy types it as any FromClause).
    __table__: ClassVar[Table]


class Dataset(Base):
    """A data file, stored once per content hash (`sha256:<hex>`)."""

    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    format: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    columns: Mapped[list[str]] = mapped_column(JSON)
    num_rows: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigCount)  # KILN_MAX_DATASET_BYTES may pass 2 GiB
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelSource(Base):
    """A user's model file, content-addressed: workers load it from here, never from disk."""

    __tablename__ = "model_sources"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)  # sha256:<hex>
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Sweep(Base):
    """Many related fits submitted at once (a grid, seeds, resamples, groups): a parent of
    member jobs (`jobs.sweep_id`). Its status is derived from its members' statuses."""

    __tablename__ = "sweeps"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(255))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    members: Mapped[int] = mapped_column(Integer)
    batches: Mapped[int] = mapped_column(Integer, default=0)  # vectorised batch jobs
    owner: Mapped[str | None] = mapped_column(String(255), index=True)  # the API's user
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Unique per owner (uq_sweeps_owner_name); its tags are also copied to its members' rows.
    name: Mapped[str | None] = mapped_column(String(MAX_NAME_CHARS))
    tags: Mapped[dict[str, str] | None] = mapped_column(JSON)


class Job(Base):
    """One unit of work (a fit); its row is the source of truth for its state."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(String(255))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    source_id: Mapped[str | None] = mapped_column(ForeignKey("model_sources.id"))
    # A predict job's fit: the job waits until it succeeded (and fails if it did not).
    depends_on: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    # A sweep's member: its sweep, its position in it, and the vectorised batch job that fits
    # it (None: it runs as an ordinary job). A member in a batch is never sent on its own.
    sweep_id: Mapped[str | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), index=True
    )
    member: Mapped[int | None] = mapped_column(Integer)
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    # A unit of work of an MCMC job (kind chain): that job, which gathers its units' chains.
    parent_id: Mapped[str | None] = mapped_column(String(32), index=True)
    queue: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Step counters are 64-bit (migration 0008): a long fit's steps may pass 2**31.
    step: Mapped[int] = mapped_column(BigCount, default=0)
    total_steps: Mapped[int] = mapped_column(BigCount)
    last_loss: Mapped[float | None] = mapped_column(Float)
    # Indexed (migration 0011): lists and the dashboard page newest first.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)  # fmt: skip
    # When it last became queued (submitted, released, put back): the reaper re-sends a queued
    # job that the broker lost only once it has been queued for a while.
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The user who submitted it through the HTTP API (a token's user); NULL for a job
    # submitted directly (`jobs` or kiln.Client on the database): no identity was checked.
    owner: Mapped[str | None] = mapped_column(String(255), index=True)
    # A name the user gave it, unique per owner (uq_jobs_owner_name), usable wherever an id is.
    name: Mapped[str | None] = mapped_column(String(MAX_NAME_CHARS))
    # The fit this one continued (`--continue`); no foreign key (see migration 0012).
    continued_from: Mapped[str | None] = mapped_column(String(32), index=True)
    # Copies of spec and info that `--where` compares and sorts by (migration 0013; written
    # with db.search.searchable_columns): svi/nuts/hmc (None: a predict job), the guide of an
    # SVI fit, and info.final_loss.
    method: Mapped[str | None] = mapped_column(String(16), index=True)
    guide: Mapped[str | None] = mapped_column(String(255))
    final_loss: Mapped[float | None] = mapped_column(Float, index=True)


class JobTag(Base):
    """A job's tag: `SELECT job_id FROM job_tags WHERE key = 'study' AND value = 'a'`."""

    __tablename__ = "job_tags"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_TAG_KEY_CHARS), primary_key=True)
    value: Mapped[str] = mapped_column(String(MAX_TAG_VALUE_CHARS))


class Attempt(Base):
    """One try at running a job: who, where, when, and how it ended."""

    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # succeeded, failed, cancelled, requeued (infrastructure error), lost (its worker died)
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)


class Worker(Base):
    """A live (or once live) worker process, kept fresh by its heartbeat."""

    __tablename__ = "workers"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSON)
    device: Mapped[str] = mapped_column(String(32))
    # Jobs it runs at once (`--concurrency`): an MCMC job's chains are spread over these.
    slots: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Loss(Base):
    """One row per (job, step): `SELECT step, loss FROM losses WHERE job_id = ...`."""

    __tablename__ = "losses"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigCount, primary_key=True)
    loss: Mapped[float] = mapped_column(Float)


class JobLog(Base):
    """A job's own log, one line a row, numbered per job across attempts: what its model
    printed (`output`), warnings (`warning`), Kiln's lines (`kiln`), and where a capped log
    dropped lines (`dropped`). Written by worker/joblog.py; read by `kiln logs`."""

    __tablename__ = "job_logs"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigCount, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stream: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)


class Metric(Base):
    """A named measurement of a job by step (and epoch): train_elbo, test_elbo, test_accuracy,
    mse... `SELECT step, value FROM metrics WHERE job_id = ... AND name = 'test_elbo'`.
    A predict job's metrics are at step 0."""

    __tablename__ = "metrics"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(BigCount, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigCount, default=0)
    value: Mapped[float] = mapped_column(Float)


class Param(Base):
    """Posterior summary of one latent site, constrained space.

    mean/sd/q05/q50/q95 are plain floats for scalar sites (SQL-friendly); `stats` always holds
    the codec-encoded (5, *shape) array of the same statistics for sites of any shape.
    """

    __tablename__ = "params"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    site: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    shape: Mapped[list[int]] = mapped_column(JSON)
    mean: Mapped[float | None] = mapped_column(Float)
    sd: Mapped[float | None] = mapped_column(Float)
    q05: Mapped[float | None] = mapped_column(Float)
    q50: Mapped[float | None] = mapped_column(Float)
    q95: Mapped[float | None] = mapped_column(Float)
    stats: Mapped[bytes] = mapped_column(LargeBinary)
    # MCMC only: split rank-normalised R-hat, bulk and tail ESS (scalars for scalar sites) and
    # their codec-encoded (3, *shape) array for sites of any shape.
    r_hat: Mapped[float | None] = mapped_column(Float)
    ess_bulk: Mapped[float | None] = mapped_column(Float)
    ess_tail: Mapped[float | None] = mapped_column(Float)
    diagnostics: Mapped[bytes | None] = mapped_column(LargeBinary)


class GuideParam(Base):
    """A fitted guide parameter from Pyro's param store (constrained), by its Pyro name."""

    __tablename__ = "guide_params"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    shape: Mapped[list[int]] = mapped_column(JSON)
    dtype: Mapped[str] = mapped_column(String(16))
    value: Mapped[bytes] = mapped_column(LargeBinary)


class Sample(Base):
    """Draws of one site, codec-encoded (dtype and shape in the blob and in columns).

    kind: `posterior` (latent sites), `deterministic` (e.g. the regression `mean`),
    `predictive` (`obs` under the posterior predictive) or `data` (the rows predicted for:
    `__X__` covariates, `__y__` observed response, `__row__` row positions in the table), and
    for MCMC jobs `sample_stats` (per draw: diverging, step_size, tree_depth, energy, ...).
    `log_likelihood`: a user model fit's pointwise log-likelihood of observed site SITE, stored
    as `log_likelihood:SITE`, (draws used, *data shape), with `observed:SITE` (kind `data`:
    its observed values) and `__loglik_draws__` (kind `data`: which of the chain-major draws
    were used, at most 1000; worker/runners/loglik.py).
    An MCMC job's draws are chain-major, (chains * draws, *shape); jobs.info["chains"] says
    how many chains. `stats` holds the (5, *shape) summary (mean, sd, q05, q50, q95) so
    listing reads no draws.
    """

    __tablename__ = "samples"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    site: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer, default=0)
    num_samples: Mapped[int] = mapped_column(Integer)
    shape: Mapped[list[int]] = mapped_column(JSON)  # of one draw
    dtype: Mapped[str] = mapped_column(String(16), default="float32")
    stats: Mapped[bytes | None] = mapped_column(LargeBinary)
    draws: Mapped[bytes] = mapped_column(LargeBinary)


class FittedState(Base):
    """The full fitted state: enough to rebuild the guide in another process."""

    __tablename__ = "fitted_states"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    format: Mapped[str] = mapped_column(String(64))
    guide: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Checkpoint(Base):
    """A running fit's latest resumable state; a new attempt goes on from `step`."""

    __tablename__ = "checkpoints"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigCount)
    format: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Token(Base):
    """An HTTP API token of a user: only a salted scrypt hash of it is stored (db/tokens.py)."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # also in the token: a lookup
    user: Mapped[str] = mapped_column(String(255), index=True)
    role: Mapped[str] = mapped_column(String(16))  # read, submit, admin
    hash: Mapped[str] = mapped_column(String(255))  # scrypt$n$r$p$salt$digest (hex)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # This token's caps (None: the server's KILN_USER_MAX_UNFINISHED / _UPLOAD_MB).
    max_unfinished: Mapped[int | None] = mapped_column(BigInteger)
    max_upload_bytes: Mapped[int | None] = mapped_column(BigInteger)


Index("ix_jobs_queue_status", Job.queue, Job.status)
Index("ix_job_tags_key_value", JobTag.key, JobTag.value)
Index("ix_params_site_job_id", Param.site, Param.job_id)  # params.SITE.STAT over every job
# A NULL owner (direct submissions) is one namespace: coalesce it, since NULLs never collide.
for _mapped in (Job, Sweep):
    Index(f"uq_{_mapped.__tablename__}_owner_name", func.coalesce(_mapped.owner, ""),
          _mapped.name, unique=True)  # fmt: skip

"""Fit results: losses, posterior summaries, guide parameters and the fitted state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from db.codec import decode_array, encode_array
from db.models import Base, FittedState, GuideParam, Loss, Metric, Param, Sample, utcnow
from kiln.records import DIAGNOSTICS, STATS, SiteStats

if TYPE_CHECKING:
    import psycopg


def store_fit_results(
    session: Session,
    job_id: str,
    *,
    sites: Sequence[SiteStats],
    draws: Mapping[str, np.ndarray],
    guide_params: Mapping[str, np.ndarray],
    state: bytes,
    state_format: str,
    guide: str,
) -> None:
    """Replace this job's params, posterior draws, guide params and fitted state. No commit."""
    for table in (Param, Sample, GuideParam, FittedState):
        session.execute(delete(table).where(table.job_id == job_id))
    add_params(session, job_id, sites)
    add_samples(session, job_id, {site: ("posterior", values) for site, values in draws.items()})
    for name, value in guide_params.items():
        session.add(GuideParam(**guide_param_row(job_id, name, value)))
    session.add(FittedState(job_id=job_id, format=state_format, guide=guide, content=state))


def guide_param_row(job_id: str, name: str, value: np.ndarray) -> dict[str, Any]:
    return {"job_id": job_id, "name": name, "shape": list(value.shape),
            "dtype": str(value.dtype), "value": encode_array(value)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FitRecord:
    """One fit's results as store_fit_results takes them, for store_many_fit_results."""

    job_id: str
    sites: Sequence[SiteStats]
    draws: Mapping[str, np.ndarray]
    guide_params: Mapping[str, np.ndarray]
    state: bytes
    state_format: str
    guide: str


def store_many_fit_results(session: Session, records: Sequence[FitRecord]) -> None:
    """The results of many fits that have none yet (a sweep batch's members), in one bulk
    insert per table instead of an ORM object per row. No commit.

    Each posterior draw's summary is its site's stats (the same numbers summary_of gives)."""
    params, samples, guide_params, states = [], [], [], []
    now = utcnow()
    for r in records:
        for position, s in enumerate(r.sites):
            params.append(param_row(r.job_id, position, s))
            stats = stacked_stats(s)
            samples.append(
                sample_row(r.job_id, position, s.site, "posterior", r.draws[s.site], stats)
            )
        guide_params += [guide_param_row(r.job_id, n, v) for n, v in r.guide_params.items()]
        states.append({"job_id": r.job_id, "format": r.state_format, "guide": r.guide,
                       "content": r.state, "created_at": now})  # fmt: skip
    for table, rows in ((Param, params), (Sample, samples), (GuideParam, guide_params),
                        (FittedState, states)):  # fmt: skip
        if rows:
            session.execute(insert(table.__table__), rows)


def add_loss_rows(session: Session, rows: Sequence[tuple[str, int, float]]) -> None:
    """Many (job_id, step, loss) rows at once; a row whose (job_id, step) is already stored is
    skipped, so a write retried after a lost commit reply stores nothing twice. No commit.

    10^5 rows and more (a sweep batch's members): PostgreSQL takes them by COPY, SQLite by
    the driver's own executemany; SQLAlchemy's per-row parameter handling would otherwise be
    most of the time. COPY has no ON CONFLICT: it runs in a savepoint, and when a row is
    already there the rows go again by INSERT ... ON CONFLICT DO NOTHING (only a retry pays
    that). Other databases get a Core executemany."""
    if not rows:
        return
    table = Loss.__table__
    columns = "job_id, step, loss"
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        from psycopg.errors import UniqueViolation

        try:
            with session.begin_nested():
                # session.connection() emits the SAVEPOINT. The DBAPI protocol SQLAlchemy
                # types this with has no COPY: it is psycopg's own.
                dbapi = session.connection().connection.dbapi_connection
                raw = cast("psycopg.Connection[Any]", dbapi)
                with raw.cursor() as cursor:
                    with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                        copy.write("".join(f"{j}\t{int(i)}\t{float(v)!r}\n" for j, i, v in rows))
        except UniqueViolation:
            insert_new_rows(session, Loss, _loss_dicts(rows))
    elif dialect.name == "sqlite" and dialect.paramstyle == "qmark":
        connection.exec_driver_sql(
            f"INSERT INTO {table.name} ({columns}) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(j, int(i), float(v)) for j, i, v in rows],
        )
    else:
        insert_new_rows(session, Loss, _loss_dicts(rows))


def _loss_dicts(rows: Sequence[tuple[str, int, float]]) -> list[dict[str, Any]]:
    return [{"job_id": j, "step": int(i), "loss": float(v)} for j, i, v in rows]


def insert_new_rows(session: Session, table: type[Base], rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` into `table`, skipping those whose primary key is already stored: loss and
    metric rows are written by flushes that are retried when a commit's reply is lost (the
    commit may have gone through). The dialect's INSERT ... ON CONFLICT DO NOTHING on
    PostgreSQL and SQLite; a plain INSERT elsewhere. No commit."""
    if not rows:
        return
    name = session.connection().dialect.name
    statement: Any
    if name == "postgresql":
        statement = postgresql_insert(table.__table__).on_conflict_do_nothing()
    elif name == "sqlite":
        statement = sqlite_insert(table.__table__).on_conflict_do_nothing()
    else:
        statement = insert(table.__table__)
    session.execute(statement, list(rows))


def add_params(
    session: Session,
    job_id: str,
    sites: Sequence[SiteStats],
    diagnostics: Mapping[str, np.ndarray] | None = None,
) -> None:
    """One Param row per latent site (scalar columns filled for scalar sites). No commit.

    `diagnostics` ({site: (3, *shape) r_hat, ess_bulk, ess_tail}) is for MCMC jobs.
    """
    for position, s in enumerate(sites):
        diag = (diagnostics or {}).get(s.site)
        session.add(Param(**param_row(job_id, position, s, diag)))


def stacked_stats(s: SiteStats) -> np.ndarray:
    """(5, *shape) float64: mean, sd, q05, q50, q95, as stored in params.stats and samples.stats."""
    return np.stack([np.asarray(getattr(s, k), dtype=np.float64) for k in STATS])


def param_row(
    job_id: str, position: int, s: SiteStats, diag: np.ndarray | None = None
) -> dict[str, Any]:
    """A Param row's columns."""
    stacked = stacked_stats(s)
    scalar = {k: float(stacked[i].reshape(-1)[0]) for i, k in enumerate(STATS)}
    row: dict[str, Any] = {
        "job_id": job_id,
        "site": s.site,
        "position": position,
        "shape": list(s.shape),
        "stats": encode_array(stacked),
        **(scalar if stacked[0].size == 1 else dict.fromkeys(STATS)),
        "diagnostics": None,
        **dict.fromkeys(DIAGNOSTICS),
    }
    if diag is not None:
        diag = np.asarray(diag, dtype=np.float64)
        row["diagnostics"] = encode_array(diag)
        if diag[0].size == 1:
            row.update({k: float(diag[i].reshape(-1)[0]) for i, k in enumerate(DIAGNOSTICS)})
    return row


def store_mcmc_results(
    session: Session,
    job_id: str,
    *,
    sites: Sequence[SiteStats],
    diagnostics: Mapping[str, np.ndarray],
    draws: Mapping[str, tuple[str, np.ndarray]],
) -> None:
    """Replace an MCMC job's params (with diagnostics) and draws ({site: (kind, chain-major
    draws)}, sample stats included). No commit."""
    for table in (Param, Sample, GuideParam, FittedState):
        session.execute(delete(table).where(table.job_id == job_id))
    add_params(session, job_id, sites, diagnostics)
    add_samples(session, job_id, draws)


def get_diagnostics(session: Session, job_id: str) -> dict[str, np.ndarray]:
    """{site: (3, *shape) r_hat, ess_bulk, ess_tail} of an MCMC job's sites (empty for SVI)."""
    rows = session.execute(
        select(Param.site, Param.diagnostics)
        .where(Param.job_id == job_id, Param.diagnostics.is_not(None))
        .order_by(Param.position)
    ).all()
    return {row.site: decode_array(row.diagnostics) for row in rows}


def store_predict_results(
    session: Session,
    job_id: str,
    sites: Mapping[str, tuple[str, np.ndarray]],
    params: Sequence[SiteStats],
) -> None:
    """Replace a predict job's samples (every site) and params (its latent draws). No commit."""
    for table in (Param, Sample):
        session.execute(delete(table).where(table.job_id == job_id))
    add_params(session, job_id, params)
    add_samples(session, job_id, sites)


def summary_of(draws: np.ndarray) -> np.ndarray:
    """(5, *shape) float64: mean, sd, q05, q50, q95 over the first axis (NaN-aware)."""
    values = np.asarray(draws, dtype=np.float64)
    if values.shape[0] == 0:
        return np.full((5, *values.shape[1:]), np.nan)
    sd = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros(values.shape[1:])
    quantiles = np.quantile(values, (0.05, 0.5, 0.95), axis=0)
    return np.stack([values.mean(axis=0), sd, *quantiles])


def add_samples(
    session: Session,
    job_id: str,
    sites: Mapping[str, tuple[str, np.ndarray]],
    *,
    summarize: bool = True,
) -> None:
    """Add one row per site: {site: (kind, draws shaped (num_samples, *shape))}. No commit.

    Each row holds the compressed draws and, for every kind but `data`, their summary.
    """
    for position, (site, (kind, values)) in enumerate(sites.items()):
        stats = summary_of(values) if summarize and kind != "data" else None
        session.add(Sample(**sample_row(job_id, position, site, kind, values, stats)))


def sample_row(
    job_id: str, position: int, site: str, kind: str, values: np.ndarray,
    stats: np.ndarray | None,
) -> dict[str, Any]:  # fmt: skip
    """A Sample row's columns: draws shaped (num_samples, *shape) and their (5, *shape) summary."""
    values = np.asarray(values)
    return {
        "job_id": job_id,
        "site": site,
        "kind": kind,
        "position": position,
        "num_samples": int(values.shape[0]),
        "shape": list(values.shape[1:]),
        "dtype": str(values.dtype),
        "stats": None if stats is None else encode_array(stats),
        "draws": encode_array(values),
    }


def store_samples(
    session: Session, job_id: str, sites: Mapping[str, tuple[str, np.ndarray]]
) -> None:
    """Replace this job's samples with `sites` ({site: (kind, draws)}). No commit."""
    session.execute(delete(Sample).where(Sample.job_id == job_id))
    add_samples(session, job_id, sites)


@dataclass(frozen=True, slots=True)
class SampleSummary:
    """One site's stored draws, described without reading them."""

    site: str
    kind: str
    num_samples: int
    shape: tuple[int, ...]
    dtype: str
    stats: np.ndarray | None  # (5, *shape): mean, sd, q05, q50, q95


def get_sample_summaries(
    session: Session, job_id: str, site: str | None = None
) -> list[SampleSummary]:
    """Every stored site of a job (or one), in storage order, without the draws."""
    query = select(
        Sample.site, Sample.kind, Sample.num_samples, Sample.shape, Sample.dtype, Sample.stats
    ).where(Sample.job_id == job_id)
    if site is not None:
        query = query.where(Sample.site == site)
    rows = session.execute(query.order_by(Sample.position, Sample.site)).all()
    return [
        SampleSummary(
            site=r.site,
            kind=r.kind,
            num_samples=int(r.num_samples),
            shape=tuple(r.shape),
            dtype=r.dtype,
            stats=decode_array(r.stats) if r.stats is not None else None,
        )  # fmt: skip
        for r in rows
    ]


def get_losses(session: Session, job_id: str) -> list[tuple[int, float]]:
    rows = session.execute(
        select(Loss.step, Loss.loss).where(Loss.job_id == job_id).order_by(Loss.step)
    ).all()
    return [(int(step), float(loss)) for step, loss in rows]


def get_metrics(
    session: Session, job_id: str, name: str | None = None
) -> list[tuple[str, int, int, float]]:
    """(name, step, epoch, value) rows by step, then name."""
    query = select(Metric.name, Metric.step, Metric.epoch, Metric.value).where(
        Metric.job_id == job_id
    )
    if name is not None:
        query = query.where(Metric.name == name)
    rows = session.execute(query.order_by(Metric.step, Metric.name)).all()
    return [(r.name, int(r.step), int(r.epoch), float(r.value)) for r in rows]


def add_metrics(session: Session, job_id: str, values: Mapping[str, float], step: int = 0) -> None:
    """A predict job's (or a fit's final) metrics at one step. No commit."""
    session.execute(delete(Metric).where(Metric.job_id == job_id, Metric.step == step))
    for name, value in values.items():
        session.add(Metric(job_id=job_id, name=name, step=step, epoch=0, value=float(value)))


def get_params(session: Session, job_id: str) -> list[SiteStats]:
    rows = session.scalars(
        select(Param).where(Param.job_id == job_id).order_by(Param.position)
    ).all()
    out = []
    for row in rows:
        stacked = decode_array(row.stats)
        out.append(SiteStats(row.site, tuple(row.shape), *stacked))
    return out


def get_draws(
    session: Session,
    job_id: str,
    kind: str | Sequence[str] | None = "posterior",
    sites: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Draws by site, in storage order: of one kind, of several, or (None) of every kind."""
    query = select(Sample.site, Sample.draws).where(Sample.job_id == job_id)
    if isinstance(kind, str):
        query = query.where(Sample.kind == kind)
    elif kind is not None:
        query = query.where(Sample.kind.in_(list(kind)))
    if sites is not None:
        query = query.where(Sample.site.in_(list(sites)))
    rows = session.execute(query.order_by(Sample.position, Sample.site)).all()
    return {row.site: decode_array(row.draws) for row in rows}


def get_guide_params(session: Session, job_id: str) -> dict[str, np.ndarray]:
    rows = session.scalars(select(GuideParam).where(GuideParam.job_id == job_id)).all()
    return {row.name: decode_array(row.value) for row in rows}


def get_fitted_state(session: Session, job_id: str) -> FittedState | None:
    return session.get(FittedState, job_id)

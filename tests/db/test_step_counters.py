"""Step counters are 64-bit (migration 0008): a step past 2**31 is stored and read back on
SQLite and PostgreSQL, and migrating a database from 0007 keeps its rows."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from sqlalchemy import select

from db.migrate import alembic_config
from db.models import Checkpoint, Dataset, Job, Loss, Metric
from db.session import make_engine, make_sessionmaker
from kiln.settings import normalise_db_url

BIG = 2**40 + 3  # far past a 32-bit INTEGER's 2**31 - 1
SIZE = 3 * 2**30  # a 3 GiB data set


def _old_job_with_two_losses(url: str) -> None:
    """Job `old1` and two of its loss rows, written with the columns every schema since 0005
    has (for a database migrated down to an older revision)."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO jobs (id, kind, status, spec, model, queue, priority, step,"
            " total_steps, created_at, attempts, max_attempts, cancel_requested, info)"
            " VALUES ('old1', 'fit', 'succeeded', '{}', 'm', 'cpu', 5, 2, 2,"
            " CURRENT_TIMESTAMP, 1, 3, false, '{}')"
        ))  # fmt: skip
        connection.execute(sa.text(
            "INSERT INTO losses (job_id, step, loss) VALUES ('old1', 0, 3.0), ('old1', 1, 2.0)"
        ))  # fmt: skip
    engine.dispose()


def _store_and_read(url: str, job_id: str) -> tuple[int, int, int, int, int, int]:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as session:
            session.add(Dataset(id=f"sha256:{job_id}", format="csv", name="d.csv", columns=[],
                                num_rows=1, size_bytes=SIZE, content=b"x"))  # fmt: skip
            session.add(Job(id=job_id, kind="fit", status="running", spec={}, model="m",
                            queue="cpu", step=BIG, total_steps=BIG + 1, info={}))  # fmt: skip
            session.flush()
            session.add_all([
                Loss(job_id=job_id, step=BIG, loss=1.5),
                Metric(job_id=job_id, name="test_elbo", step=BIG, epoch=BIG // 7, value=2.0),
                Checkpoint(job_id=job_id, step=BIG, format="f", content=b""),
            ])  # fmt: skip
            session.commit()
        with sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return (
                job.step,
                job.total_steps,
                session.scalars(select(Loss.step).where(Loss.job_id == job_id)).one(),
                session.scalars(select(Metric.epoch).where(Metric.job_id == job_id)).one(),
                session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job_id)).one(),
                session.scalars(select(Dataset.size_bytes)).one(),
            )
    finally:
        engine.dispose()


def test_a_step_count_past_2_31_is_stored_and_read_back(db_url: str) -> None:
    url = normalise_db_url(db_url)
    assert _store_and_read(url, "big1") == (BIG, BIG + 1, BIG, BIG // 7, BIG, SIZE)


def test_migration_0008_widens_the_counters_and_keeps_every_row(db_url: str) -> None:
    """From 0007 (32-bit on PostgreSQL) to head: the rows written before are all there, with
    their losses (a rebuilt SQLite `jobs` table would have cascaded them away), and a step past
    2**31 fits afterwards."""
    url = normalise_db_url(db_url)
    config = alembic_config(url)
    command.downgrade(config, "0007")
    try:
        _old_job_with_two_losses(url)
        command.upgrade(config, "head")
        engine = make_engine(url)
        with engine.connect() as connection:
            losses = connection.execute(sa.text("SELECT count(*) FROM losses")).scalar_one()
            step = connection.execute(sa.text("SELECT step FROM jobs")).scalar_one()
            if engine.dialect.name == "postgresql":
                types: dict[str, str] = dict(connection.execute(sa.text(
                    "SELECT table_name || '.' || column_name, data_type FROM"
                    " information_schema.columns WHERE table_schema = current_schema() AND"
                    " table_name IN ('jobs', 'losses', 'metrics', 'checkpoints', 'datasets') AND"
                    " column_name IN ('step', 'total_steps', 'epoch', 'size_bytes')"
                )).all())  # fmt: skip
                assert len(types) == 7 and set(types.values()) == {"bigint"}, types
        engine.dispose()
        assert (losses, step) == (2, 2)
        assert _store_and_read(url, "big2")[:3] == (BIG, BIG + 1, BIG)
    finally:
        command.upgrade(config, "head")


def test_upgrading_sqlite_from_0005_keeps_the_losses_of_its_jobs(tmp_path) -> None:
    """0006 rebuilds `jobs` on SQLite (batch mode); with foreign keys on, that cascaded every
    loss away. Migrations run with them off."""
    url = normalise_db_url(f"sqlite:///{tmp_path / 'old.db'}")
    config = alembic_config(url)
    command.upgrade(config, "0005")
    _old_job_with_two_losses(url)
    command.upgrade(config, "head")
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM losses")).scalar_one() == 2
        assert connection.execute(sa.text("PRAGMA foreign_keys")).scalar_one() == 1  # back on
    engine.dispose()


def test_the_head_and_current_revisions_read_without_alembic_agree_with_alembic(
    tmp_path: Path,
) -> None:
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from db.migrate import current_revision, head_revision
    from db.session import make_engine

    config = alembic_config(f"sqlite:///{tmp_path / 'k.db'}")
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()
    engine = make_engine(f"sqlite:///{tmp_path / 'k.db'}")
    assert current_revision(engine) is None  # an empty file: no alembic_version table
    for revision in ("0005", "head"):
        command.upgrade(config, revision)
        with engine.connect() as connection:
            expected = MigrationContext.configure(connection).get_current_revision()
        assert current_revision(engine) == expected
    assert current_revision(engine) == head_revision()
    engine.dispose()

"""names, tags and lineage: jobs.name, sweeps.name and sweeps.tags, the job_tags table,
jobs.continued_from

A job or sweep may carry a name, unique per owner (jobs.owner/sweeps.owner; direct
submissions, owner NULL, share one namespace): the unique index is over
(coalesce(owner, ''), name), so a NULL owner counts as one owner and a NULL name is never a
duplicate. Tags are key=value pairs in `job_tags` (one row per job and key), indexed by
(key, value) for `--where "tag.study = 'a'"`; a sweep keeps its own in sweeps.tags and its
members get rows of their own. `jobs.continued_from` is the fit a continued fit started from.
All ADD COLUMN / CREATE TABLE / CREATE INDEX: no SQLite table is rebuilt.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ADDED = [
    ("jobs", sa.Column("name", sa.String(length=128), nullable=True)),
    ("jobs", sa.Column("continued_from", sa.String(length=32), nullable=True)),
    ("sweeps", sa.Column("name", sa.String(length=128), nullable=True)),
    ("sweeps", sa.Column("tags", sa.JSON(), nullable=True)),
]


def upgrade() -> None:
    for table, column in ADDED:
        op.add_column(table, column)
    # No foreign key for continued_from: SQLite cannot add one without rebuilding `jobs`; the
    # lineage is written once at submit from a job that exists, and a deleted fit leaves it
    # dangling rather than refusing the delete.
    op.create_index(op.f("ix_jobs_continued_from"), "jobs", ["continued_from"], unique=False)
    for table in ("jobs", "sweeps"):
        op.create_index(
            f"uq_{table}_owner_name", table,
            [sa.text("coalesce(owner, '')"), "name"], unique=True,
        )  # fmt: skip
    op.create_table(
        "job_tags",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_tags_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "key", name=op.f("pk_job_tags")),
    )
    op.create_index("ix_job_tags_key_value", "job_tags", ["key", "value"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_tags_key_value", table_name="job_tags")
    op.drop_table("job_tags")
    for table in ("jobs", "sweeps"):
        op.drop_index(f"uq_{table}_owner_name", table_name=table)
    op.drop_index(op.f("ix_jobs_continued_from"), table_name="jobs")
    for table, column in reversed(ADDED):
        if op.get_bind().dialect.name == "sqlite":  # DROP COLUMN without a rebuild (3.35+)
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column.name}")
        else:
            op.drop_column(table, column.name)

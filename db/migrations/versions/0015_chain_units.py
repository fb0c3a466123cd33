"""jobs.parent_id: an MCMC job's chains as units of work (child jobs of kind `chain`)

A user_mcmc_fit job's chains run as jobs of their own (kind `chain`, spec user_mcmc_chain),
claimed, leased, checkpointed, retried and reaped like any job, on any worker of the queue;
`parent_id` names the job that gathers them (db/chains.py). A plain indexed column, without a
foreign key, so that SQLite adds it without rebuilding the table; db.chains deletes a job's
units with it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("parent_id", sa.String(length=32), nullable=True))
    op.create_index(op.f("ix_jobs_parent_id"), "jobs", ["parent_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_parent_id"), table_name="jobs")
    if op.get_bind().dialect.name == "sqlite":  # DROP COLUMN without a rebuild (3.35+)
        op.execute("ALTER TABLE jobs DROP COLUMN parent_id")
    else:
        op.drop_column("jobs", "parent_id")

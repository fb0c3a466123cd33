"""jobs.created_at index: the dashboard's and GET /jobs' newest-first pages

`jobs` lists, GET /jobs and the dashboard's jobs page order by `created_at DESC, id` and take a
page (LIMIT/OFFSET). Without an index on created_at, SQLite and PostgreSQL read and sort every
job row for each page (bench/bench_dashboard.py: the newest 50 of 10,000 jobs took 68 ms on
SQLite, 13 ms with this index). A plain CREATE INDEX: no SQLite table is rebuilt.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_jobs_created_at"), "jobs", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_created_at"), table_name="jobs")

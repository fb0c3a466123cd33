"""tokens and owners: the HTTP API's tokens table (hashed, revocable) and jobs.owner

`jobs.owner` is the user whose token submitted the job through `jobs server`; it stays NULL for
jobs submitted directly (`jobs` or kiln.Client on the database), old ones included. Both are
plain additions (ADD COLUMN, CREATE TABLE, CREATE INDEX), so SQLite's `jobs` is not rebuilt
(a rebuild with foreign keys on would cascade-delete every job's results: see 0008).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
    )
    op.create_index(op.f("ix_tokens_user"), "tokens", ["user"], unique=False)
    op.add_column("jobs", sa.Column("owner", sa.String(length=255), nullable=True))
    op.create_index(op.f("ix_jobs_owner"), "jobs", ["owner"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_owner"), table_name="jobs")
    if op.get_bind().dialect.name == "sqlite":
        # DROP COLUMN needs SQLite 3.35; it does not rebuild the table (see above).
        op.execute("ALTER TABLE jobs DROP COLUMN owner")
    else:
        op.drop_column("jobs", "owner")
    op.drop_index(op.f("ix_tokens_user"), table_name="tokens")
    op.drop_table("tokens")

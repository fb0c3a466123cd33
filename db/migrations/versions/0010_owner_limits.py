"""owner limits: sweeps.owner, and a token's own caps on unfinished jobs and upload bytes

`sweeps.owner` is the user who submitted the sweep through `jobs server` (NULL for sweeps
submitted directly). `tokens.max_unfinished` and `tokens.max_upload_bytes` override the
server's KILN_USER_MAX_UNFINISHED and KILN_USER_MAX_UPLOAD_MB for requests with that token
(NULL: the server's). All plain ADD COLUMN / CREATE INDEX: no SQLite table is rebuilt.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ADDED = [
    ("sweeps", sa.Column("owner", sa.String(length=255), nullable=True)),
    ("tokens", sa.Column("max_unfinished", sa.BigInteger(), nullable=True)),
    ("tokens", sa.Column("max_upload_bytes", sa.BigInteger(), nullable=True)),
]


def upgrade() -> None:
    for table, column in ADDED:
        op.add_column(table, column)
    op.create_index(op.f("ix_sweeps_owner"), "sweeps", ["owner"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_sweeps_owner"), table_name="sweeps")
    for table, column in reversed(ADDED):
        if op.get_bind().dialect.name == "sqlite":  # DROP COLUMN without a rebuild (3.35+)
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column.name}")
        else:
            op.drop_column(table, column.name)

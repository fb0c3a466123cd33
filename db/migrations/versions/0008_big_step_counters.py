"""64-bit step counters: jobs.step and total_steps, losses.step, metrics.step and epoch,
checkpoints.step (and datasets.size_bytes) become BIGINT

A 32-bit INTEGER overflows at 2**31 (a long fit's steps, a library fit's epochs x batches, a
data set over 2 GiB). SQLite stores every INTEGER column as a 64-bit integer already, and the
models declare these columns INTEGER there (db.models.BigCount), so SQLite is left alone: a
batch rebuild of `jobs` (copy, drop, rename) with foreign keys on would cascade-delete every
job's losses, params and samples when the old table is dropped.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = {
    "jobs": ("step", "total_steps"),
    "losses": ("step",),
    "metrics": ("step", "epoch"),
    "checkpoints": ("step",),
    "datasets": ("size_bytes",),
}


def _retype(old: type[sa.Integer], new: type[sa.Integer]) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # INTEGER is 64-bit in SQLite (see above)
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(
                    column, existing_type=old(), type_=new(), existing_nullable=False
                )


def upgrade() -> None:
    _retype(sa.Integer, sa.BigInteger)


def downgrade() -> None:
    # Values above 2**31 - 1 make this fail on PostgreSQL rather than lose them.
    _retype(sa.BigInteger, sa.Integer)

"""workers.slots: the jobs a worker runs at once (its --concurrency)

An MCMC job's chains are spread over the job slots of the queue's live workers at submit
(scheduler.submit._chains_per_unit), so that a `--concurrency 2` worker on a 2-core host runs
two units of work at once. Rows of workers registered before this revision count one slot.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("slots", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # DROP COLUMN without a rebuild (3.35+)
        op.execute("ALTER TABLE workers DROP COLUMN slots")
    else:
        op.drop_column("workers", "slots")

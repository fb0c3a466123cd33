"""predict jobs: job dependencies, sample summaries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("depends_on", sa.String(length=32), nullable=True))
        batch.create_foreign_key(
            op.f("fk_jobs_depends_on_jobs"), "jobs", ["depends_on"], ["id"], ondelete="CASCADE"
        )
        batch.create_index(op.f("ix_jobs_depends_on"), ["depends_on"])
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("position", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("dtype", sa.String(length=16), nullable=False, server_default="float32")
        )
        batch.add_column(sa.Column("stats", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("stats")
        batch.drop_column("dtype")
        batch.drop_column("position")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_depends_on"))
        batch.drop_constraint(op.f("fk_jobs_depends_on_jobs"), type_="foreignkey")
        batch.drop_column("depends_on")

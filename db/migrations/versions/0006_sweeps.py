"""sweeps: sweeps table, jobs.sweep_id / member / batch_id

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("dataset_id", sa.String(length=80), nullable=True),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_sweeps_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("member", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("batch_id", sa.String(length=32), nullable=True))
        batch.create_foreign_key(
            op.f("fk_jobs_sweep_id_sweeps"), "sweeps", ["sweep_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_foreign_key(
            op.f("fk_jobs_batch_id_jobs"), "jobs", ["batch_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index(op.f("ix_jobs_sweep_id"), ["sweep_id"])
        batch.create_index(op.f("ix_jobs_batch_id"), ["batch_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_batch_id"))
        batch.drop_index(op.f("ix_jobs_sweep_id"))
        batch.drop_constraint(op.f("fk_jobs_batch_id_jobs"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_jobs_sweep_id_sweeps"), type_="foreignkey")
        batch.drop_column("batch_id")
        batch.drop_column("member")
        batch.drop_column("sweep_id")
    op.drop_table("sweeps")

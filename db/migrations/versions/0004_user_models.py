"""user models and MCMC: model_sources, jobs.source_id, MCMC diagnostics on params

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_sources",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_sources")),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("source_id", sa.String(length=80), nullable=True))
        batch.create_foreign_key(
            op.f("fk_jobs_source_id_model_sources"), "model_sources", ["source_id"], ["id"]
        )
    with op.batch_alter_table("params") as batch:
        batch.add_column(sa.Column("r_hat", sa.Float(), nullable=True))
        batch.add_column(sa.Column("ess_bulk", sa.Float(), nullable=True))
        batch.add_column(sa.Column("ess_tail", sa.Float(), nullable=True))
        batch.add_column(sa.Column("diagnostics", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("params") as batch:
        for column in ("diagnostics", "ess_tail", "ess_bulk", "r_hat"):
            batch.drop_column(column)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("fk_jobs_source_id_model_sources"), type_="foreignkey")
        batch.drop_column("source_id")
    op.drop_table("model_sources")

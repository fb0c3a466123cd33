"""searchable columns: jobs.method, jobs.guide, jobs.final_loss, and indexes for `--where`

`jobs list --where` and Client.search (db/search.py) compare and sort by a fit's method
(svi, nuts, hmc), its guide and its final loss. Read from the spec and info JSON, each
comparison parsed every job's document (PostgreSQL's `json` is text); as columns, written where
the job is (db.search.searchable_columns: at submit, and whenever its info is), they are plain
comparisons, and final_loss is indexed for `--order-by final_loss`. `params` gets an index by
(site, job_id) for `params.SITE.STAT` over every job (its key starts with job_id).
The backfill reads every job's spec and info once. ADD COLUMN / CREATE INDEX only: no SQLite
table is rebuilt.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

import json
import math
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ADDED = [
    sa.Column("method", sa.String(length=16), nullable=True),
    sa.Column("guide", sa.String(length=255), nullable=True),
    sa.Column("final_loss", sa.Float(), nullable=True),
]
BATCH = 1000


def _document(raw: Any) -> dict[str, Any]:
    value = json.loads(raw) if isinstance(raw, str) else raw
    return value if isinstance(value, dict) else {}


def _columns(spec: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """db.search.searchable_columns as of this revision (a migration keeps its own copy)."""
    kind = spec.get("kind")
    svi = ("linreg_fit", "library_fit", "user_svi_fit", "batch")
    method = "svi" if kind in svi else spec.get("method")
    method = method if isinstance(method, str) else None
    guide = spec.get("guide_function") or spec.get("guide") if method == "svi" else None
    loss = info.get("final_loss")
    finite = isinstance(loss, int | float) and math.isfinite(loss)
    return {"b_method": method, "b_guide": guide[:255] if isinstance(guide, str) else None,
            "b_final_loss": float(loss) if finite else None}  # fmt: skip


def upgrade() -> None:
    for column in ADDED:
        op.add_column("jobs", column)
    op.create_index(op.f("ix_jobs_method"), "jobs", ["method"], unique=False)
    op.create_index(op.f("ix_jobs_final_loss"), "jobs", ["final_loss"], unique=False)
    op.create_index("ix_params_site_job_id", "params", ["site", "job_id"], unique=False)
    bind = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("spec", sa.Text),
                    sa.column("info", sa.Text), *(sa.column(c.name) for c in ADDED))  # fmt: skip
    rows = bind.execute(sa.text("SELECT id, spec, info FROM jobs")).all()
    for start in range(0, len(rows), BATCH):
        values = [
            {"b_id": job_id, **_columns(_document(spec), _document(info))}
            for job_id, spec, info in rows[start : start + BATCH]
        ]
        bind.execute(
            jobs.update().where(jobs.c.id == sa.bindparam("b_id")).values(
                method=sa.bindparam("b_method"), guide=sa.bindparam("b_guide"),
                final_loss=sa.bindparam("b_final_loss"),
            ),
            values,
        )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_params_site_job_id", table_name="params")
    op.drop_index(op.f("ix_jobs_final_loss"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_method"), table_name="jobs")
    for column in reversed(ADDED):
        if op.get_bind().dialect.name == "sqlite":  # DROP COLUMN without a rebuild (3.35+)
            op.execute(f"ALTER TABLE jobs DROP COLUMN {column.name}")
        else:
            op.drop_column("jobs", column.name)

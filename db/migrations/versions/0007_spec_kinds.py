"""spec kinds: every stored spec names its job kind (linreg_fit, user_mcmc_fit, ...)

Specs used to say `kind: fit` for every fit and tell the kinds apart by `source` and
`method`; each kind now has its own spec model, discriminated on `kind` (kiln.specs). This
rewrites the stored specs (jobs.spec, and sweeps.spec's base) and leaves each user fit only the
fields of its method. The field lists are this revision's own snapshot, not kiln.specs's.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MCMC_ONLY = ("warmup", "samples", "chains", "target_accept", "max_tree_depth", "num_steps", "jit")
SVI_ONLY = ("guide", "guide_function", "elbo", "optim", "steps", "lr", "num_samples",
            "checkpoint_every", "checkpoint_every_s")  # fmt: skip

jobs = sa.table(
    "jobs", sa.column("id", sa.String), sa.column("kind", sa.String), sa.column("spec", sa.JSON)
)
sweeps = sa.table("sweeps", sa.column("id", sa.String), sa.column("spec", sa.JSON))


def _fit_kind(spec: dict[str, Any]) -> dict[str, Any]:
    spec = dict(spec)
    source = spec.pop("source", None)
    if source == "library":
        spec["kind"] = "library_fit"
    elif source == "user":
        method = spec.get("method", "svi")
        if method == "svi":
            spec["kind"] = "user_svi_fit"
            for key in (*MCMC_ONLY, "method"):
                spec.pop(key, None)
        else:
            spec["kind"] = "user_mcmc_fit"
            for key in SVI_ONLY:
                spec.pop(key, None)
    else:
        spec["kind"] = "linreg_fit"
    return spec


PREDICT_OF = {"linreg_fit": "predict", "library_fit": "library_predict",
              "user_svi_fit": "user_predict", "user_mcmc_fit": "user_predict"}  # fmt: skip


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(jobs.c.id, jobs.c.kind, jobs.c.spec)).all()
    specs = {r.id: dict(r.spec or {}) for r in rows}
    fit_kinds: dict[str, str] = {}
    for r in rows:
        if r.kind == "fit" and specs[r.id].get("kind") == "fit":
            specs[r.id] = _fit_kind(specs[r.id])
            bind.execute(jobs.update().where(jobs.c.id == r.id).values(spec=specs[r.id]))
        fit_kinds[r.id] = str(specs[r.id].get("kind"))
    for r in rows:
        spec = specs[r.id]
        if r.kind == "predict" and spec.get("kind") == "predict":
            kind = PREDICT_OF.get(fit_kinds.get(str(spec.get("from_job")), ""), "predict")
            if kind != "predict":
                spec = {**spec, "kind": kind}
                bind.execute(jobs.update().where(jobs.c.id == r.id).values(spec=spec))
    for r in bind.execute(sa.select(sweeps.c.id, sweeps.c.spec)).all():
        spec = dict(r.spec or {})
        if isinstance(spec.get("base"), dict) and spec["base"].get("kind") == "fit":
            spec["base"] = {**spec["base"], "kind": "linreg_fit"}
            bind.execute(sweeps.update().where(sweeps.c.id == r.id).values(spec=spec))


def downgrade() -> None:
    bind = op.get_bind()
    for r in bind.execute(sa.select(jobs.c.id, jobs.c.spec)).all():
        spec = dict(r.spec or {})
        kind = spec.get("kind")
        if kind in ("linreg_fit", "library_fit", "user_svi_fit", "user_mcmc_fit"):
            spec["kind"] = "fit"
            if kind == "library_fit":
                spec["source"] = "library"
            elif kind == "user_svi_fit":
                spec.update(source="user", method="svi")
            elif kind == "user_mcmc_fit":
                spec["source"] = "user"
        elif kind in ("library_predict", "user_predict"):
            spec["kind"] = "predict"
        else:
            continue
        bind.execute(jobs.update().where(jobs.c.id == r.id).values(spec=spec))
    for r in bind.execute(sa.select(sweeps.c.id, sweeps.c.spec)).all():
        spec = dict(r.spec or {})
        if isinstance(spec.get("base"), dict) and spec["base"].get("kind") == "linreg_fit":
            spec["base"] = {**spec["base"], "kind": "fit"}
            bind.execute(sweeps.update().where(sweeps.c.id == r.id).values(spec=spec))

"""Every job kind is registered once in each place: spec, check, runner, info; and stored specs
from before the kinds existed are rewritten by migration 0007."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from kiln.errors import SpecError
from kiln.jobinfo import INFO_BY_KIND
from kiln.specs import JOB_KINDS, PREDICT_KIND, parse_job_spec


def test_every_kind_has_a_check_a_runner_and_an_info_model() -> None:
    from scheduler.kinds import CHECKS
    from worker.runners import RUNNERS

    assert set(RUNNERS) == set(JOB_KINDS) == set(INFO_BY_KIND)
    # batches are made by sweeps, chain units with their MCMC job
    assert set(CHECKS) == set(JOB_KINDS) - {"batch", "user_mcmc_chain"}
    fits = {k for k in JOB_KINDS if k.endswith("_fit")}
    assert set(PREDICT_KIND) == fits


def test_a_spec_is_parsed_by_its_kind_and_refuses_what_that_kind_does_not_take() -> None:
    spec = parse_job_spec({"kind": "user_mcmc_fit", "model": "m.py:model", "model_file": "m.py"})
    assert type(spec).__name__ == "UserMcmcFitSpec" and spec.total_steps == 4 * 2000
    with pytest.raises(SpecError, match="spec.steps: Extra inputs are not permitted"):
        parse_job_spec({"kind": "user_mcmc_fit", "model": "m.py", "model_file": "m.py",
                        "steps": 5})  # fmt: skip
    with pytest.raises(SpecError, match="spec.lr: must be a finite number"):
        parse_job_spec({"kind": "linreg_fit", "model": "linreg", "formula": "y ~ x",
                        "lr": float("inf")})  # fmt: skip
    with pytest.raises(SpecError, match="kind"):
        parse_job_spec({"kind": "fit", "model": "linreg", "formula": "y ~ x"})


def test_migration_0007_rewrites_specs_stored_before_the_kinds(tmp_path: Path) -> None:
    from alembic import command

    from db.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0006")
    old = {
        "a": ("fit", {"kind": "fit", "model": "linreg", "formula": "y ~ x", "steps": 5}),
        "b": ("fit", {"kind": "fit", "source": "user", "method": "nuts", "model": "m.py",
                      "model_file": "m.py", "steps": 9, "lr": 0.1, "chains": 2}),
        "c": ("fit", {"kind": "fit", "source": "user", "method": "svi", "model": "m.py",
                      "model_file": "m.py", "steps": 9, "chains": 2}),
        "d": ("fit", {"kind": "fit", "source": "library", "model": "vae", "data": "digits",
                      "data_kind": "builtin"}),
        "e": ("predict", {"kind": "predict", "from_job": "dddd"}),
    }  # fmt: skip
    engine = sa.create_engine(url)
    jobs = sa.table("jobs", sa.column("id"), sa.column("kind"), sa.column("spec", sa.JSON),
                    sa.column("status"), sa.column("model"), sa.column("queue"),
                    sa.column("priority"), sa.column("step"), sa.column("total_steps"),
                    sa.column("attempts"), sa.column("max_attempts"), sa.column("created_at"),
                    sa.column("cancel_requested"), sa.column("info", sa.JSON))  # fmt: skip
    with engine.begin() as connection:
        for job_id, (kind, spec) in old.items():
            connection.execute(jobs.insert().values(
                id=job_id * 4, kind=kind, spec=spec, status="succeeded", model="m",
                queue="cpu", priority=5, step=0, total_steps=1, attempts=1, max_attempts=3,
                created_at=sa.func.current_timestamp(), cancel_requested=False, info={},
            ))  # fmt: skip
    command.upgrade(alembic_config(url), "head")
    with engine.connect() as connection:
        specs = {r.id[0]: r.spec for r in connection.execute(sa.select(jobs.c.id, jobs.c.spec))}
    engine.dispose()
    kinds = {k: parse_job_spec(v).kind for k, v in specs.items()}
    assert kinds == {"a": "linreg_fit", "b": "user_mcmc_fit", "c": "user_svi_fit",
                     "d": "library_fit", "e": "library_predict"}  # fmt: skip
    assert "steps" not in specs["b"] and "chains" not in specs["c"]

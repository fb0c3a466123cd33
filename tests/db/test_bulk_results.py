"""The bulk writers a sweep batch uses store what the one-fit writers store, on each database."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobs import create_job
from db.models import Job, JobStatus, Loss
from db.results import (
    FitRecord,
    add_loss_rows,
    get_draws,
    get_fitted_state,
    get_guide_params,
    get_losses,
    get_params,
    get_sample_summaries,
    store_fit_results,
    store_many_fit_results,
)
from db.sweeps import MemberEnd, end_members
from inference.posterior import summarize_draws
from kiln.records import STATS
from tests.params import EACH_DATABASE

pytestmark = EACH_DATABASE


def fit_record(job_id: str, rng: np.random.Generator) -> FitRecord:
    draws = {"a": rng.normal(size=400).astype(np.float32),
             "b": rng.gamma(2.0, size=(400, 3)).astype(np.float32)}  # fmt: skip
    return FitRecord(
        job_id,
        sites=[summarize_draws(s, d) for s, d in draws.items()],
        draws=draws,
        guide_params={
            "AutoNormal.locs.a": np.asarray(rng.normal(), dtype=np.float32),  # shape ()
            "AutoNormal.scales.b": rng.random(3).astype(np.float32),
        },  # fmt: skip
        state=rng.bytes(64),
        state_format="kiln-param-store/1",
        guide="AutoNormal",
    )


def add_jobs(session: Session, *ids: str, **fields: Any) -> None:
    for job_id in ids:
        create_job(session, id=job_id, kind="fit", spec={}, model="linreg", queue="cpu",
                   total_steps=50, **fields)  # fmt: skip


def present(array: np.ndarray | None) -> np.ndarray:
    """The array, which must be there."""
    assert array is not None
    return array


def stored(sessions: sessionmaker[Session], job_id: str) -> dict[str, Any]:
    """Everything read back for a fit, by the readers the CLI uses."""
    with sessions() as session:
        state = get_fitted_state(session, job_id)
        assert state is not None
        return {
            "params": [(p.site, p.shape, [np.asarray(getattr(p, k)).tolist() for k in STATS])
                       for p in get_params(session, job_id)],
            "draws": {s: (d.dtype.str, d.tolist()) for s, d in get_draws(session, job_id).items()},
            "summaries": [(x.site, x.kind, x.num_samples, x.shape, x.dtype,
                           present(x.stats).tolist())
                          for x in get_sample_summaries(session, job_id)],
            "guide": {n: (v.dtype.str, v.shape, v.tolist())
                      for n, v in get_guide_params(session, job_id).items()},
            "state": (state.content, state.format, state.guide),
            "losses": get_losses(session, job_id),
        }  # fmt: skip


def test_bulk_writers_store_what_the_one_fit_writers_store(stack) -> None:
    curve = np.random.default_rng(1).normal(size=50)
    with stack.sessions()() as session:
        add_jobs(session, "single", "bulk0", "bulk1")
        session.commit()
        r = fit_record("single", np.random.default_rng(3))
        store_fit_results(session, "single", sites=r.sites, draws=r.draws,
                          guide_params=r.guide_params, state=r.state,
                          state_format=r.state_format, guide=r.guide)  # fmt: skip
        session.add_all(Loss(job_id="single", step=i, loss=float(v)) for i, v in enumerate(curve))
        same = fit_record("bulk0", np.random.default_rng(3))  # the same results, other job
        other = fit_record("bulk1", np.random.default_rng(4))
        store_many_fit_results(session, [same, other])
        add_loss_rows(session, [("bulk0", i, v) for i, v in enumerate(curve)]  # numpy floats
                      + [("bulk1", i, float(v)) for i, v in enumerate(curve[:7])])  # fmt: skip
        store_many_fit_results(session, [])  # nothing to write is fine
        add_loss_rows(session, [])
        session.commit()
    assert stored(stack.sessions(), "bulk0") == stored(stack.sessions(), "single")
    got = stored(stack.sessions(), "bulk1")
    assert got["losses"] == [(i, float(v)) for i, v in enumerate(curve[:7])]
    assert got["draws"]["b"] == ("<f4", other.draws["b"].tolist())
    assert got["state"][0] == other.state


def test_end_members_in_bulk_and_a_cancelled_member_stays_cancelled(stack) -> None:
    with stack.sessions()() as session:
        create_job(session, id="b1", kind="batch", spec={}, model="linreg", queue="cpu",
                   total_steps=10)  # fmt: skip
        for k in range(3):
            add_jobs(session, f"m{k}", batch_id="b1", status=JobStatus.RUNNING,
                     cancel_requested=(k == 2))  # fmt: skip
        session.commit()
        end_members(session, "b1", [
            MemberEnd("m0", JobStatus.SUCCEEDED.value, 10, 1.5, None, {"final_loss": 1.4}),
            MemberEnd("m1", JobStatus.FAILED.value, 3, None, "member 1: loss is nan", {}),
            MemberEnd("m2", JobStatus.SUCCEEDED.value, 10, 2.0, None, {}),
        ])  # fmt: skip
        session.commit()
        rows = {j.id: j for j in session.scalars(select(Job).where(Job.batch_id == "b1"))}
    assert (rows["m0"].status, rows["m0"].step, rows["m0"].last_loss) == ("succeeded", 10, 1.5)
    assert rows["m0"].info == {"final_loss": 1.4} and rows["m0"].finished_at is not None
    assert (rows["m1"].status, rows["m1"].error) == ("failed", "member 1: loss is nan")
    assert (rows["m2"].status, rows["m2"].error) == ("cancelled", "cancelled by the user")

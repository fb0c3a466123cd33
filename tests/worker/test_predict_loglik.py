"""Predict jobs of the built-in regression store their rows' log predictive density where the
rows carry the response: `compare` of two predict jobs over the same new rows ranks the fits
by test-set ELPD (not LOO: az.compare's elpd over those held-out rows), as az.loo reads it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.errors import SpecError
from tests.conftest import Stack, offline_client, run_in_process
from tests.library.test_forecast_hmm_jobs import EMBEDDED
from tests.usermodels.test_loglik_compare import SVI, fitted

pytestmark = EMBEDDED


def table(path: Path, seed: int, rows: int, response: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    y = 1.0 + 2.0 * x + 0.5 * rng.normal(size=rows)
    lines = ["x,y" if response else "x"]
    lines += [f"{a:.5f},{b:.5f}" if response else f"{a:.5f}" for a, b in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def done(stack: Stack, job_id: str) -> str:
    assert run_in_process(stack, job_id) == "succeeded", offline_client(stack).job(job_id)["error"]
    return job_id


def az_loo(idata: Any) -> Any:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.loo(idata)


def test_predict_jobs_over_the_same_new_rows_compare_by_their_test_set_elpd(
    stack: Stack, tmp_path: Path
) -> None:
    kiln = offline_client(stack)
    train = table(tmp_path / "train.csv", 0, 60)
    held_out = table(tmp_path / "test.csv", 1, 25)
    fits = {f: done(stack, kiln.submit_fit(train, f, steps=400, lr=0.05, seed=1))
            for f in ("y ~ x", "y ~ 1")}  # fmt: skip
    line, flat = (done(stack, kiln.predict(fits[f], 200, data=held_out, seed=2))
                  for f in ("y ~ x", "y ~ 1"))  # fmt: skip
    idata = kiln.inference_data(line)
    log_lik = idata["log_likelihood"]["obs"]
    assert log_lik.dims == ("chain", "draw", "row") and log_lik.shape == (1, 200, 25)
    ranked = kiln.compare([flat, line])
    assert list(ranked.index) == [line, flat] and ranked.loc[flat, "d_loo"] > 5
    for job_id in (line, flat):
        expected = az_loo(kiln.inference_data(job_id)).elpd_loo
        assert abs(ranked.loc[job_id, "elpd_loo"] - expected) < 0.1
    # Rows without the response: nothing to score, and compare says which job.
    unknown = table(tmp_path / "x.csv", 1, 25, response=False)
    blind = done(stack, kiln.predict(fits["y ~ x"], 100, data=unknown, seed=2))
    assert "log_likelihood" not in kiln.inference_data(blind).groups()
    why = f"job {blind} has no stored pointwise.*without the response `y`"
    with pytest.raises(SpecError, match=why):
        kiln.compare([line, blind])


@pytest.mark.slow  # five sandboxed jobs: about 25 s
def test_user_predict_jobs_with_observed_new_data_compare_by_test_set_elpd(
    stack: Stack, tmp_path: Path
) -> None:
    kiln = offline_client(stack)
    line, flat = (fitted(stack, tmp_path, f, **SVI) for f in ("line", "flat"))
    x = np.linspace(-0.9, 0.9, 15)
    new = {"x": x.tolist(), "y": (0.5 + 2.0 * x).tolist()}
    on_line, on_flat = (done(stack, kiln.predict(f, 150, data=new, seed=3)) for f in (line, flat))
    stored = {s.site: s for s in kiln.sample_summaries(on_line)}
    assert stored["log_likelihood:obs"].kind == "log_likelihood"
    assert stored["log_likelihood:obs"].shape == (15,)
    ranked = kiln.compare([on_flat, on_line])
    assert list(ranked.index) == [on_line, on_flat] and ranked.loc[on_flat, "d_loo"] > 5
    for job_id in (on_line, on_flat):
        expected = az_loo(kiln.inference_data(job_id)).elpd_loo
        assert abs(ranked.loc[job_id, "elpd_loo"] - expected) < 0.1
    # New data without `y`: a prediction, and no log-likelihood (the note says why).
    blind = done(stack, kiln.predict(line, 50, data={"x": x.tolist()}, seed=3))
    with pytest.raises(SpecError, match=f"job {blind} has no stored pointwise.*no observed"):
        kiln.compare([on_line, blind])

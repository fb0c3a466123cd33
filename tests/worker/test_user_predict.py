"""Predict jobs from fits of a user's model (eight schools), run in process through the job
kind's runner (execute_job without Celery): NUTS and SVI fits, the fit's data and new data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.client import Client
from tests.conftest import Stack, offline_client, run_in_process
from tests.params import EMBEDDED_AND_FLEET

pytestmark = EMBEDDED_AND_FLEET  # the embedded defaults and a fleet (PostgreSQL + Redis)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCHOOLS_PY = EXAMPLES / "eight_schools.py"
SCHOOLS = json.loads((EXAMPLES / "eight_schools.json").read_text())


def client(stack: Stack) -> Client:
    return offline_client(stack)


def run(stack: Stack, job_id: str) -> dict[str, Any]:
    status = run_in_process(stack, job_id)
    job = client(stack).job(job_id)
    assert status == "succeeded", job["error"]
    return job


def observed_draws(stack: Stack, job_id: str) -> np.ndarray:
    draws = client(stack).samples(job_id, site="y", raw=True)
    assert isinstance(draws, np.ndarray)
    return draws


def covered(draws: np.ndarray, y: list[float]) -> float:
    low, high = np.quantile(draws, [0.05, 0.95], axis=0)
    return float(((np.asarray(y) >= low) & (np.asarray(y) <= high)).mean())


@pytest.mark.parametrize(
    "fit",
    [
        {"method": "nuts", "chains": 2, "warmup": 200, "samples": 200, "seed": 3},
        {"method": "svi", "guide": "AutoNormal", "steps": 1500, "lr": 0.02, "seed": 3},
    ],
    ids=["nuts", "svi"],
)
def test_a_user_model_fit_predicts_its_observed_site_for_its_data(stack: Stack, fit) -> None:
    kiln = client(stack)
    fit_id = kiln.submit_model(SCHOOLS_PY, SCHOOLS, **fit)
    run(stack, fit_id)
    predict_id = kiln.predict(fit_id, num_samples=400, seed=5)
    job = run(stack, predict_id)
    assert job["kind"] == "predict" and job["spec"]["kind"] == "user_predict"
    draws = observed_draws(stack, predict_id)
    assert draws.shape == (400, 8)  # one draw of every school's effect per posterior draw
    assert covered(draws, SCHOOLS["y"]) >= 0.75  # the 90% intervals cover most observed y
    info = job["info"]
    assert info["coverage_90"] == pytest.approx(covered(draws, SCHOOLS["y"]))
    assert info["from_job"] == fit_id and "y" in info["sites"] and "theta" in info["sites"]
    idata = kiln.inference_data(predict_id)
    assert idata["posterior_predictive"]["y"].shape == (1, 400, 8)
    np.testing.assert_array_equal(idata["observed_data"]["y"].values, SCHOOLS["y"])
    theta = kiln.samples(predict_id, site="theta", raw=True)
    assert isinstance(theta, np.ndarray) and theta.shape == (400, 8)


def test_a_user_model_predicts_for_new_data_without_its_observed_values(stack: Stack) -> None:
    kiln = client(stack)
    fit_id = kiln.submit_model(SCHOOLS_PY, SCHOOLS, method="svi", steps=300, seed=1)
    run(stack, fit_id)
    new = {"J": 8, "sigma": [1.0] * 8}  # the same schools, measured far more precisely
    predict_id = kiln.predict(fit_id, num_samples=200, data=new, seed=2)
    job = run(stack, predict_id)
    assert job["info"]["new_data"] is True and job["info"].get("coverage_90") is None
    draws = observed_draws(stack, predict_id)
    assert draws.shape == (200, 8)
    idata = kiln.inference_data(predict_id)
    assert "predictions" in idata.groups() and "observed_data" not in idata.groups()


def test_predict_from_a_user_fit_refuses_data_its_model_cannot_take(stack: Stack) -> None:
    from kiln.errors import SpecError

    kiln = client(stack)
    fit_id = kiln.submit_model(SCHOOLS_PY, SCHOOLS, method="svi", steps=50, seed=1)
    with pytest.raises(SpecError, match="needs `sigma`"):
        kiln.predict(fit_id, data={"J": 8})
    with pytest.raises(SpecError, match="`school`, which is not a parameter"):
        kiln.predict(fit_id, data={"J": 8, "sigma": [1.0] * 8, "school": [1] * 8})

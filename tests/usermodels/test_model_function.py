"""Client.submit_model with the model function itself, as written in a notebook cell: its own
source is sent as the model file, after the usual Pyro imports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from kiln.errors import SpecError
from tests.conftest import Stack, offline_client, run_in_process
from tests.params import EMBEDDED_AND_FLEET

if TYPE_CHECKING:  # not at run time: the function's file has them from FUNCTION_PRELUDE
    import pyro
    import pyro.distributions as dist

DATA = {"J": 8, "y": [28.0, 8, -3, 7, -1, 1, 18, 12], "sigma": [15.0, 10, 16, 11, 9, 11, 10, 18]}


def schools(J: int, sigma: Any, y: Any = None) -> None:  # as a user would write it
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", J):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


@EMBEDDED_AND_FLEET
def test_a_model_function_is_fitted_from_its_own_source(stack: Stack) -> None:
    client = offline_client(stack)
    job_id = client.submit_model(schools, DATA, steps=30, seed=0)
    assert run_in_process(stack, job_id) == "succeeded"
    job = client.job(job_id)
    assert job["spec"]["model"] == "schools.py:schools"
    assert {s.site for s in client.posterior_stats(job_id)} >= {"mu", "tau"}


def test_what_cannot_be_sent_as_a_model_says_so() -> None:
    from kiln.submitter import model_file_of

    with pytest.raises(SpecError, match="not a lambda"):
        model_file_of(lambda: None)
    with pytest.raises(SpecError, match="source of print\\(\\) cannot be found"):
        model_file_of(print)
    source = model_file_of(schools).content.decode()
    assert source.startswith("import math\nimport torch\nimport pyro\n")
    assert "def schools(J: int, sigma: Any, y: Any = None) -> None:" in source

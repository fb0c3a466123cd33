"""kiln.Client: submit, wait and read results from Python, against a real worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from kiln.errors import DataError, NotFound, SpecError
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack
from tests.params import EMBEDDED_AND_FLEET

if TYPE_CHECKING:
    from kiln import Client


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    from kiln import Client

    with Client(database_url=stack.db_url, broker_url=stack.broker_url, home=stack.home) as c:
        yield c


@EMBEDDED_AND_FLEET
def test_notebook_round_trip(client, start_worker) -> None:
    start_worker("w1")
    frame = pd.read_csv(RUGGED, encoding="ISO-8859-1")  # the file is Latin-1
    fit = client.submit_fit(frame, RUGGED_FORMULA, steps=400, seed=5, guide="AutoNormal")
    predict = client.predict(fit, num_samples=300, seed=6)  # submitted before the fit ended
    assert client.wait(predict, timeout=240)["status"] == "succeeded"
    assert client.job(fit)["status"] == "succeeded"

    losses = client.losses(fit)
    assert list(losses.columns) == ["step", "loss"] and len(losses) == 400
    params = client.params(fit)
    assert list(params.index) == [
        "Intercept",
        "cont_africa",
        "rugged",
        "cont_africa:rugged",
        "sigma",
    ]
    assert abs(params.loc["cont_africa", "mean"] + 1.85) < 0.15

    summary = client.samples(predict, site="obs")
    assert len(summary) == 170 and set(summary["kind"]) == {"predictive"}
    obs = client.samples(predict, site="obs", raw=True)
    assert isinstance(obs, np.ndarray) and obs.shape == (300, 170)
    assert np.allclose(summary["mean"].to_numpy(), obs.mean(axis=0), atol=1e-5)

    idata = client.inference_data(predict)
    assert idata.posterior_predictive["obs"].shape == (1, 300, 170)
    jobs = client.jobs()
    assert set(jobs["id"]) == {fit, predict}


@EMBEDDED_AND_FLEET
def test_client_errors_are_kilns_own(client) -> None:
    with pytest.raises(SpecError, match="spec.steps: must be > 0"):
        client.submit_fit(RUGGED, RUGGED_FORMULA, steps=0)
    with pytest.raises(DataError, match="column `ruggd` not in data"):
        client.submit_fit(RUGGED, "log(rgdppc_2000) ~ ruggd")
    with pytest.raises(NotFound):
        client.predict("ffffffffffffffff")

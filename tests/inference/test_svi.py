"""Pure, seeded inference tests: the runner's events, NaN handling, state round trip."""

from __future__ import annotations

import pandas as pd
import pyro
import pytest
import torch

from inference.events import Finished, Started, Step
from inference.fit import prepare_fit
from inference.state import dump_state, load_state, param_values
from inference.svi import run_svi
from kiln.errors import ModelError
from tests.conftest import RUGGED, RUGGED_FORMULA


@pytest.fixture(scope="module")
def rugged() -> pd.DataFrame:
    return pd.read_csv(RUGGED, encoding="ISO-8859-1")


def test_run_svi_yields_started_each_step_and_finished(rugged) -> None:
    p = prepare_fit("linreg", rugged, formula=RUGGED_FORMULA, guide="AutoNormal", seed=0)
    events = list(run_svi(p.model, p.guide, p.args, p.kwargs, steps=20, lr=0.02))
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    assert [e.step for e in events if isinstance(e, Step)] == list(range(20))
    assert p.info["rows_used"] == 170 and p.info["rows_dropped"] == 64


def test_nan_loss_raises_model_error_naming_step_and_lr(rugged) -> None:
    p = prepare_fit("linreg", rugged, formula=RUGGED_FORMULA, guide="AutoNormal", seed=0,
                    priors={"sigma": {"low": 0.0, "high": 1e-3}})  # fmt: skip
    with pytest.raises(ModelError, match=r"at step \d+") as caught:
        for _ in run_svi(p.model, p.guide, p.args, p.kwargs, steps=300, lr=1e9):
            pass
    assert caught.value.step is not None


def test_fitted_state_round_trips_through_bytes(rugged) -> None:
    p = prepare_fit("linreg", rugged, formula=RUGGED_FORMULA, guide="AutoNormal", seed=0)
    for _ in run_svi(p.model, p.guide, p.args, p.kwargs, steps=30, lr=0.02):
        pass
    before = param_values()
    content = dump_state()
    pyro.clear_param_store()
    load_state(content)
    after = param_values()
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(torch.as_tensor(after[name]), torch.as_tensor(before[name]))

"""Stored states are named arrays and JSON: a pickle planted in the database (a fitted state or a
checkpoint) runs no code in a worker that predicts or resumes from it; the job fails, or starts
over, with a message."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import delete, update

from db.models import Checkpoint, FittedState, Job
from inference.checkpoint import CHECKPOINT_FORMAT
from inference.state import LEGACY_STATE_FORMAT, STATE_FORMAT, dump_state, read_state
from inference.statecodec import StateFormatError, decode, encode
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, offline_client, run_in_process
from tests.params import EMBEDDED_AND_FLEET


class Payload:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def planted(marker: Path, fmt: str) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": fmt, "param_store": Payload(marker)}, buffer)
    return buffer.getvalue()


def test_the_codec_round_trips_pyro_states_bitwise_and_rejects_what_it_did_not_write(
    tmp_path: Path,
) -> None:
    import pyro
    import pyro.distributions as dist
    from pyro.infer.autoguide import AutoDelta

    from inference.guides import make_guide
    from kiln.catalog import GUIDES

    def model() -> None:
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("s", dist.Uniform(0.0, 10.0))
        pyro.sample("p", dist.Dirichlet(torch.ones(3)))
        pyro.sample("L", dist.LKJCholesky(3, 1.0))

    for name in GUIDES:  # every guide a job may name: their parameters' constraints
        make_guide(name, model)()
    AutoDelta(model)()
    before = pyro.get_param_store().get_state()
    after = read_state(dump_state())
    assert set(after["params"]) == set(before["params"])
    for name, value in before["params"].items():
        torch.testing.assert_close(after["params"][name], value, rtol=0, atol=0)
        assert type(after["constraints"][name]) is type(before["constraints"][name])
    rng = pyro.util.get_rng_state()
    again = decode(encode({"rng": rng, "steps": {0: (1, 2.5, None)}}))
    assert again["steps"] == {0: (1, 2.5, None)}
    assert again["rng"]["random"] == rng["random"]
    np.testing.assert_array_equal(again["rng"]["numpy"][1], rng["numpy"][1])
    assert torch.equal(again["rng"]["torch"], rng["torch"])
    marker = tmp_path / "pwned"
    for hostile in (planted(marker, STATE_FORMAT), b"not a state", b"PK\x03\x04junk"):
        with pytest.raises(StateFormatError):
            decode(hostile)
        with pytest.raises(StateFormatError):
            read_state(hostile)
    assert not marker.exists()


@EMBEDDED_AND_FLEET
def test_a_pickle_planted_as_a_fitted_state_runs_nothing_in_a_predict_job(
    stack: Stack, tmp_path: Path
) -> None:
    kiln = offline_client(stack)
    fit = kiln.submit_fit(RUGGED, RUGGED_FORMULA, steps=20, num_samples=20, seed=1)
    assert run_in_process(stack, fit) == "succeeded", kiln.job(fit)["error"]
    marker = tmp_path / "pwned"
    for fmt in (STATE_FORMAT, LEGACY_STATE_FORMAT):
        with stack.sessions()() as session:
            session.execute(update(FittedState).where(FittedState.job_id == fit).values(
                content=planted(marker, fmt), format=fmt))  # fmt: skip
            session.commit()
        predict = kiln.predict(fit, num_samples=50, seed=2)
        assert run_in_process(stack, predict) == "failed"
        assert "not a" in (kiln.job(predict)["error"] or "")
    assert not marker.exists()


@EMBEDDED_AND_FLEET
def test_a_pickle_planted_as_a_checkpoint_runs_nothing_when_the_fit_resumes(
    stack: Stack, tmp_path: Path
) -> None:
    kiln = offline_client(stack)
    marker = tmp_path / "pwned"
    for fmt, ends in ((CHECKPOINT_FORMAT, "failed"), ("kiln-svi-checkpoint/torch.save/v1",
                                                       "succeeded")):  # fmt: skip
        fit = kiln.submit_fit(RUGGED, RUGGED_FORMULA, steps=20, num_samples=20, seed=1)
        with stack.sessions()() as session:
            session.execute(delete(Checkpoint).where(Checkpoint.job_id == fit))
            session.add(Checkpoint(job_id=fit, step=10, format=fmt,
                                   content=planted(marker, fmt)))  # fmt: skip
            session.execute(update(Job).where(Job.id == fit).values(step=10))
            session.commit()
        # the current format is read by the codec and refused; an old one is not read at all
        assert run_in_process(stack, fit) == ends
    assert not marker.exists()

"""A vectorised batch checkpoints like a single fit: run_many yields Checkpoint events (named
arrays + JSON, no pickle), and a batch stopped after one and resumed from its bytes ends to the
last bit where the uninterrupted batch ends: losses, failures, parameters, draws, states."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import pyro
import pytest

from inference.checkpoint import BATCH_CHECKPOINT_FORMAT, CHECKPOINT_FORMAT, format_of, peek
from inference.events import BatchFinished, BatchStep, Checkpoint
from inference.statecodec import StateFormatError
from inference.vectorized import ManyResult, run_many
from kiln.tables import Design, build_design, read_csv_bytes
from tests.conftest import RUGGED, RUGGED_FORMULA

STEPS = 150


@pytest.fixture(scope="module")
def design() -> Design:
    frame = read_csv_bytes(RUGGED.read_bytes(), "rugged_data.csv")
    return build_design(frame, RUGGED_FORMULA)


def batch_args(design: Design, **extra: Any) -> dict[str, Any]:
    """Four bootstrap members; member 1's lr is far too large, so it fails early."""
    rows = len(design.y)
    weights = np.random.default_rng(0).multinomial(rows, np.full(rows, 1 / rows), size=4)
    return dict(terms=design.terms, members=4, weights=weights, seeds=[5, 6, 7, 8], steps=STEPS,
                lr=[0.01, 1e3, 0.02, 0.005], num_samples=100, progress_every=20,
                checkpoint_every=50, **extra)  # fmt: skip


def assert_same_batch(ours: ManyResult, theirs: ManyResult) -> None:
    np.testing.assert_array_equal(ours.losses, theirs.losses)  # NaN where a member failed
    assert ours.ok == theirs.ok == (0, 2, 3)
    for a, b in zip(ours.members, theirs.members, strict=True):
        assert (a.status, a.failed_step, a.reason) == (b.status, b.failed_step, b.reason)
        assert a.final_loss == b.final_loss or np.isnan(a.final_loss) and np.isnan(b.final_loss)
        assert a.params == b.params and a.state == b.state
        assert sorted(a.draws) == sorted(b.draws) and sorted(a.guide_params) == sorted(
            b.guide_params
        )
        for site in a.draws:
            np.testing.assert_array_equal(a.draws[site], b.draws[site])
        for name in a.guide_params:
            np.testing.assert_array_equal(a.guide_params[name], b.guide_params[name])


@pytest.mark.parametrize("jit", [False, True], ids=["uncompiled", "compiled"])
def test_a_batch_stopped_after_a_checkpoint_resumes_bitwise_as_the_uninterrupted_one(
    design, jit: bool
) -> None:
    kwargs = batch_args(design, jit=jit)
    events = list(run_many(design.X, design.y, **kwargs))
    uninterrupted = events[-1]
    assert isinstance(uninterrupted, BatchFinished)
    saved = [e for e in events if isinstance(e, Checkpoint)]
    assert [c.step for c in saved] == [50, 100]  # never at the end: the results are stored
    assert uninterrupted.result.members[1].failed_step is not None
    assert uninterrupted.result.members[1].failed_step < 50  # so the checkpoint carries it

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    stopped = run_many(design.X, design.y, **kwargs)
    for event in stopped:
        if isinstance(event, Checkpoint) and event.step == 100:
            content = event.content
            break
    stopped.close()  # the worker is lost here
    assert content == saved[1].content  # the same state, byte for byte

    pyro.clear_param_store()
    pyro.set_rng_seed(1234)  # a fresh process draws something else until the RNG is restored
    resumed = list(run_many(design.X, design.y, resume=content, **kwargs))
    steps = [(e.step, e.alive) for e in resumed if isinstance(e, BatchStep)]
    assert steps == [(120, 3), (140, 3), (150, 3)]
    assert not any(isinstance(e, Checkpoint) for e in resumed)  # none due after step 100
    finished = resumed[-1]
    assert isinstance(finished, BatchFinished)
    assert_same_batch(finished.result, uninterrupted.result)


def test_a_batch_checkpoint_is_named_arrays_and_json_and_names_its_format(design) -> None:
    events = run_many(design.X, design.y, **batch_args(design))
    content = next(e for e in events if isinstance(e, Checkpoint)).content
    events.close()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert all(name.endswith(".npy") for name in archive.namelist())
    with np.load(io.BytesIO(content), allow_pickle=False) as npz:  # no object arrays
        assert all(npz[name].dtype != object for name in npz.files)
    assert peek(content) == {"format": BATCH_CHECKPOINT_FORMAT, "step": 50, "members": 4}
    assert format_of(content) == BATCH_CHECKPOINT_FORMAT
    assert format_of(b"not a state") == CHECKPOINT_FORMAT and peek(b"") == {}


def test_checkpoints_by_time_come_at_progress_steps(design) -> None:
    kwargs = {**batch_args(design), "checkpoint_every": 0, "checkpoint_every_s": 1e-9}
    events = list(run_many(design.X, design.y, **kwargs))
    saved = [e.step for e in events if isinstance(e, Checkpoint)]
    assert saved == list(range(20, STEPS, 20))  # each BatchStep but the last
    kwargs["checkpoint_every_s"] = 0.0
    assert not any(isinstance(e, Checkpoint) for e in run_many(design.X, design.y, **kwargs))


def test_a_checkpoint_of_another_batch_is_refused(design) -> None:
    events = run_many(design.X, design.y, **batch_args(design))
    content = next(e for e in events if isinstance(e, Checkpoint)).content
    events.close()
    other = {**batch_args(design), "members": 3, "seeds": [5, 6, 7], "lr": 0.01}
    other["weights"] = other["weights"][:3]
    with pytest.raises(StateFormatError, match="checkpoint of 4 members at step 50"):
        next(run_many(design.X, design.y, resume=content, **other))
    with pytest.raises(StateFormatError, match="not a batch checkpoint"):
        next(run_many(design.X, design.y, resume=_svi_checkpoint(), **batch_args(design)))


def _svi_checkpoint() -> bytes:
    from inference.checkpoint import capture
    from inference.svi import make_optim

    return capture(3, make_optim("Adam", 0.1))

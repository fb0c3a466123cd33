"""A unit of MCMC chains (inference.mcmc_units): a checkpoint taken mid-warmup or mid-sampling
resumes, in a fresh run, to exactly the draws of the uninterrupted unit; hostile bytes are
refused; a model with a discrete latent runs Pyro's kernels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.events import Checkpoint, McmcFinished
from inference.mcmc_units import UnitOutcome, UnitRun, run_unit
from inference.statecodec import StateFormatError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SOURCE = (EXAMPLES / "eight_schools.py").read_text()
DATA = json.loads((EXAMPLES / "eight_schools.json").read_text())


def _unit(**options: Any) -> UnitRun:
    settings: dict[str, Any] = {
        "source": SOURCE, "filename": "eight_schools.py", "function": "model", "data": DATA,
        "chains": (2, 3), "job_chains": 4, "method": "nuts", "warmup": 60, "samples": 40,
        "seed": 11, "checkpoint_every_draws": 25, "checkpoint_every_s": 1e9,
    }  # fmt: skip
    settings.update(options)
    return UnitRun(**settings)


def _drain(run: UnitRun) -> tuple[McmcFinished, list[Checkpoint], UnitOutcome]:
    events = run_unit(run)
    finished, checkpoints = None, []
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            assert finished is not None
            return finished, checkpoints, stop.value
        if isinstance(event, McmcFinished):
            finished = event
        elif isinstance(event, Checkpoint):
            checkpoints.append(event)


def test_a_resumed_unit_draws_exactly_what_the_uninterrupted_one_draws() -> None:
    whole, checkpoints, outcome = _drain(_unit())
    assert [c.step for c in checkpoints] == [25, 50, 75]  # 2 in warmup, 1 in sampling
    assert outcome.facts["engine"] == "kiln" and outcome.facts["resumed_at"] == []
    assert outcome.facts["step"]["compiler"] == "torch.jit"
    assert whole.draws["theta"].shape == (2, 40, 8) and whole.stats["lp"].shape == (2, 40)
    for checkpoint in (checkpoints[0], checkpoints[2]):
        resumed, _, facts = _drain(_unit(resume=checkpoint.content))
        assert facts.facts["resumed_at"] == [checkpoint.step]
        for site, values in whole.draws.items():
            assert np.array_equal(resumed.draws[site], values), site
        for name, values in whole.stats.items():
            assert np.array_equal(resumed.stats[name], values), name


def test_a_checkpoint_of_other_chains_or_altered_bytes_is_refused() -> None:
    _, checkpoints, _ = _drain(_unit(samples=10, warmup=30))
    with pytest.raises(StateFormatError):
        _drain(_unit(chains=(0, 1, 2), resume=checkpoints[0].content))
    with pytest.raises(StateFormatError):
        _drain(_unit(resume=checkpoints[0].content[:-40] + b"\\0" * 40))


def test_a_discrete_latent_runs_pyros_kernel_per_chain() -> None:
    source = """
import pyro, pyro.distributions as dist, torch

def model(y):
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("n", len(y)):
        z = pyro.sample("z", dist.Bernoulli(p), infer={"enumerate": "parallel"})
        pyro.sample("y", dist.Normal(z.double() * 3.0, 1.0), obs=y)
"""
    run = _unit(source=source, filename="mix.py", data={"y": [2.5, 0.1, 2.9]}, warmup=20,
                samples=20)  # fmt: skip
    finished, checkpoints, outcome = _drain(run)
    assert outcome.facts["engine"] == "pyro" and not checkpoints
    assert finished.draws["p"].shape == (2, 20)
    assert "Pyro's NUTS kernel: latent site `z` is discrete" in finished.note


def test_a_unit_puts_the_processs_default_dtype_back() -> None:
    # A unit samples in float64; a float32 model run next in the same process (a worker's
    # next job, an in-process test) must not find float64 as its default.
    import torch

    threads = torch.get_num_threads()
    assert torch.get_default_dtype() == torch.float32
    _drain(_unit(samples=5, warmup=10))
    assert torch.get_default_dtype() == torch.float32 and torch.get_num_threads() == threads
    with pytest.raises(StateFormatError):
        _drain(_unit(resume=b"not a checkpoint"))
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.slow  # inductor's compile, three times (tests/usermodels/test_mcmc_step.py: once)
def test_auto_compiles_the_step_with_inductor_when_the_trees_foretell_a_long_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The decision counts leapfrog steps, not seconds: a unit resumed before or after the
    # switch draws exactly what the uninterrupted one drew.
    import inference.mcmc_units as units

    quick = _unit(inductor=None, warmup=30, samples=30, checkpoint_every_draws=15)
    _, _, short = _drain(quick)
    assert short.facts["step"]["inductor_from"] is None  # 60 iterations: not worth compiling
    monkeypatch.setattr(units, "AUTO_PROBE", 20)
    monkeypatch.setattr(units, "AUTO_LEAVES", 1)
    whole, checkpoints, outcome = _drain(quick)
    step = outcome.facts["step"]
    assert step["compiler"] == "inductor" and step["inductor_from"] == 20, step
    assert step["leapfrog_steps"] > 60
    assert [c.step for c in checkpoints] == [15, 30, 45]
    for checkpoint in (checkpoints[0], checkpoints[2]):  # before and after the switch
        again = _unit(inductor=None, warmup=30, samples=30, checkpoint_every_draws=15,
                      resume=checkpoint.content)  # fmt: skip
        resumed, _, facts = _drain(again)
        assert facts.facts["step"] == step
        for site, values in whole.draws.items():
            assert np.array_equal(resumed.draws[site], values), site

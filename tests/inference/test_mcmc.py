"""Kiln's MCMC of users' model files (inference.mcmc_units): events, draws and sample stats,
seeds, the compiled potential and its fallback, model errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.events import ChainProgress, Event, McmcFinished, McmcStarted
from inference.mcmc_kernels import HMC_STATS, STATS
from inference.mcmc_units import UnitRun, run_unit
from kiln.errors import DataError, ModelError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCHOOLS = (EXAMPLES / "eight_schools.py").read_text()
SCHOOLS_DATA = json.loads((EXAMPLES / "eight_schools.json").read_text())


def source(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def run(text: str, filename: str, data: dict[str, Any], **options: Any) -> list[Event]:
    chains = options.pop("chains", 1)
    settings: dict[str, Any] = {"method": "nuts", "warmup": 50, "samples": 50, "seed": 0,
                                "job_chains": chains, **options}  # fmt: skip
    unit = UnitRun(source=text, filename=filename, function="model", data=data,
                   chains=tuple(range(chains)), **settings)  # fmt: skip
    return list(run_unit(unit))


def finished(events: list[Any]) -> McmcFinished:
    done = [e for e in events if isinstance(e, McmcFinished)]
    assert len(done) == 1
    return done[0]


@pytest.fixture(scope="module")
def schools_run() -> list[Event]:
    return run(SCHOOLS, "eight_schools.py", SCHOOLS_DATA, warmup=300, samples=300, chains=2,
               seed=1, progress_every_s=0.0)  # fmt: skip


def test_eight_schools_yields_started_progress_then_finished(schools_run) -> None:
    started = schools_run[0]
    assert isinstance(started, McmcStarted)
    assert (started.method, started.chains, started.jit, started.parallel) == (
        "nuts",
        2,
        True,
        "vectorized",
    )
    progress = [e for e in schools_run if isinstance(e, ChainProgress)]
    assert {e.chain for e in progress} == {0, 1}
    assert any(e.warmup for e in progress) and not progress[-1].warmup
    assert progress[-1].done == progress[-1].total == 600


def test_eight_schools_draws_are_chain_by_draw_with_its_deterministic_site(schools_run) -> None:
    done = finished(schools_run)
    assert list(done.draws) == ["mu", "tau", "theta_tilde", "theta"]  # the model's order
    assert done.deterministic == ("theta",)
    assert done.draws["theta"].shape == (2, 300, 8) and done.draws["mu"].shape == (2, 300)
    theta = done.draws["mu"][..., None] + done.draws["tau"][..., None] * done.draws["theta_tilde"]
    assert np.allclose(done.draws["theta"], theta)
    assert tuple(done.stats) == STATS
    assert all(v.shape == (2, 300) for v in done.stats.values())
    assert done.stats["diverging"].dtype == np.bool_
    assert ((done.stats["tree_depth"] >= 1) & (done.stats["tree_depth"] <= 10)).all()


def test_eight_schools_matches_the_known_posterior(schools_run) -> None:
    done = finished(schools_run)
    assert abs(done.draws["mu"].mean() - 4.4) < 1.2 and abs(done.draws["tau"].mean() - 3.6) < 1.2


def test_same_seed_gives_same_draws_and_another_seed_other_draws() -> None:
    first = finished(run(SCHOOLS, "eight_schools.py", SCHOOLS_DATA, seed=3))
    again = finished(run(SCHOOLS, "eight_schools.py", SCHOOLS_DATA, seed=3))
    other = finished(run(SCHOOLS, "eight_schools.py", SCHOOLS_DATA, seed=4))
    assert np.array_equal(first.draws["mu"], again.draws["mu"])
    assert not np.array_equal(first.draws["mu"], other.draws["mu"])


UNTRACEABLE = source("""
    import pyro
    import pyro.distributions as dist
    import torch

    # A fixed feature map made with torch.nn outside Pyro: its weights require grad, so
    # torch.jit.trace refuses to bake them into the traced potential energy.
    features = torch.nn.Linear(1, 1, dtype=torch.float64)
    with torch.no_grad():
        features.weight.fill_(2.0)
        features.bias.fill_(0.0)


    def model(x, y):
        slope = pyro.sample("slope", dist.Normal(0.0, 1.0))
        mean = slope * features(x.unsqueeze(-1)).squeeze(-1)
        with pyro.plate("n", len(x)):
            pyro.sample("y", dist.Normal(mean, 0.5), obs=y)
""")


def test_a_model_with_torch_modules_samples_right() -> None:
    data = {"x": [1.0, 2.0, 3.0, 4.0], "y": [2.1, 3.9, 6.2, 7.8]}
    done = finished(run(UNTRACEABLE, "features.py", data, warmup=60, samples=60))
    assert 0.8 < done.draws["slope"].mean() < 1.2  # y is about 2x, features(x) is 2x


BRANCHES = source("""
    import pyro
    import pyro.distributions as dist


    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        nu = pyro.sample("nu", dist.Gamma(2.0, 0.1))
        if nu > 30:  # Python control flow on a draw: a trace would keep one branch for good
            likelihood = dist.Normal(mu, 1.0)
        else:
            likelihood = dist.StudentT(nu, mu, 1.0)
        with pyro.plate("n", len(y)):
            pyro.sample("y", likelihood, obs=y)
""")


def test_control_flow_on_a_draw_runs_through_pyro_and_says_so() -> None:
    data = {"y": [0.3, -1.2, 2.5, 0.8, 1.1]}
    done = finished(run(BRANCHES, "robust.py", data))
    assert not done.jit
    assert done.note.startswith("compiling the potential failed (") and done.note.endswith(
        "; ran through Pyro"
    )
    assert done.draws["nu"].shape == (1, 50) and np.isfinite(done.draws["nu"]).all()


FAILS_LATER = source("""
    import pyro
    import pyro.distributions as dist

    calls = 0


    def model(sigma, y):
        global calls
        calls += 1  # its 300th run is during warmup, after setup went well
        params = {"mu": 0.0} if calls >= 300 else {"mu": 0.0, "tau": 1.0}
        tau = params["tau"]
        mu = pyro.sample("mu", dist.Normal(params["mu"], tau))
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)
""")


def test_model_raising_during_sampling_gives_model_error_with_the_users_line() -> None:
    data = {"sigma": [1.0, 2.0], "y": [0.5, -0.3]}
    with pytest.raises(ModelError) as caught:
        run(FAILS_LATER, "later.py", data, warmup=200, samples=200, jit=False)
    assert str(caught.value) == (
        "the model raised KeyError: 'tau' at later.py line 11: `tau = params[\"tau\"]`"
    )


def test_model_that_always_raises_fails_before_sampling() -> None:
    broken = source("""
        def model(y):
            return y + undefined
    """)
    with pytest.raises(ModelError, match=r"NameError: name 'undefined' is not defined at "
                       r"broken.py line 2: `return y \+ undefined`"):  # fmt: skip
        run(broken, "broken.py", {"y": 1.0})


def test_bad_data_fails_before_sampling() -> None:
    ragged = {**SCHOOLS_DATA, "y": [[1], [2, 3]]}
    with pytest.raises(DataError, match="data field `y`: ragged nested list"):
        run(SCHOOLS, "eight_schools.py", ragged)


def test_hmc_with_fixed_steps_records_stats_without_tree_depth() -> None:
    done = finished(run(SCHOOLS, "eight_schools.py", SCHOOLS_DATA, method="hmc", num_steps=8))
    assert tuple(done.stats) == HMC_STATS
    assert all(v.shape == (1, 50) for v in done.stats.values())
    assert np.isfinite(done.stats["energy"]).all() and np.isfinite(done.stats["lp"]).all()

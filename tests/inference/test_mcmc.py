"""MCMC of users' model files: events, draws and sample stats, seeds, the jit fallback, model
errors, and stopping chains (child processes and the thread) when the caller closes."""

from __future__ import annotations

import json
import multiprocessing
import os
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pyro.ops.stats import split_gelman_rubin

from inference.events import ChainProgress, Event, McmcFinished, McmcStarted
from inference.mcmc import HMC_STATS, STATS, run_mcmc
from kiln.errors import DataError, ModelError, SpecError

# torch 2.13 deprecates torch.jit.trace, which Pyro's jit_compile uses. Under
# filterwarnings=error that warning would make every traced chain in the thread path fall back.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCHOOLS = (EXAMPLES / "eight_schools.py").read_text()
SCHOOLS_DATA = json.loads((EXAMPLES / "eight_schools.json").read_text())


def source(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def mcmc_started(event: Event) -> McmcStarted:
    assert isinstance(event, McmcStarted)
    return event


def finished(events: list[Any]) -> McmcFinished:
    assert isinstance(events[-1], McmcFinished)
    return events[-1]


def schools(**options: Any) -> list[Any]:
    options = {"method": "nuts", "seed": 1, **options}
    return list(run_mcmc(SCHOOLS, "eight_schools.py", "model", SCHOOLS_DATA, **options))


@pytest.fixture(scope="module")
def schools_timed() -> list[tuple[float, Any]]:
    """(seconds since the start, event) of a run in processes."""
    start = time.monotonic()
    events = run_mcmc(SCHOOLS, "eight_schools.py", "model", SCHOOLS_DATA, method="nuts",
                      warmup=300, samples=300, chains=2, seed=1, progress_every_s=0.25)  # fmt: skip
    return [(time.monotonic() - start, event) for event in events]


@pytest.fixture(scope="module")
def schools_run(schools_timed) -> list[Any]:
    return [event for _, event in schools_timed]


def test_eight_schools_in_processes_yields_started_progress_then_finished(schools_run) -> None:
    started, *progress, done = schools_run
    assert started == McmcStarted("nuts", "cpu", 2, 300, 300, True, "processes")
    assert all(isinstance(e, ChainProgress) and e.total == 600 for e in progress)
    for chain in (0, 1):
        mine = [e.done for e in progress if e.chain == chain]
        assert mine == sorted(mine) and mine[-1] == 600
    assert isinstance(done, McmcFinished) and done.jit and done.note == ""
    assert len(done.chain_seconds) == 2 and min(done.chain_seconds) > 0
    assert "theta(2, 300, 8)" in repr(done) and "array" not in repr(done)


def test_progress_comes_while_children_start_and_trace(schools_timed) -> None:
    times = [t for t, _ in schools_timed]
    gaps = np.diff(times[:-1])  # the last event waits for the draws to be put together
    assert times[1] < 1.0 and gaps.max() < 1.0  # progress_every_s=0.25, on busy cores


def test_eight_schools_draws_are_chain_by_draw_with_its_deterministic_site(schools_run) -> None:
    done = finished(schools_run)
    assert list(done.draws) == ["mu", "tau", "theta_tilde", "theta"]
    assert done.draws["mu"].shape == (2, 300) and done.draws["theta"].shape == (2, 300, 8)
    assert all(v.dtype == np.float64 for v in done.draws.values())
    assert done.deterministic == ("theta",)
    d = done.draws
    expected = d["mu"][..., None] + d["tau"][..., None] * d["theta_tilde"]
    torch.testing.assert_close(torch.from_numpy(d["theta"]), torch.from_numpy(expected))


def test_eight_schools_sample_stats_are_per_draw(schools_run) -> None:
    stats = finished(schools_run).stats
    assert tuple(stats) == STATS
    assert all(v.shape == (2, 300) for v in stats.values())
    assert stats["diverging"].dtype == np.bool_ and stats["tree_depth"].dtype == np.int64
    assert ((stats["accept_prob"] >= 0) & (stats["accept_prob"] <= 1)).all()
    assert 0.6 < stats["accept_prob"].mean() < 0.97  # adapted towards target_accept 0.8
    assert ((stats["tree_depth"] >= 1) & (stats["tree_depth"] <= 10)).all()
    assert (stats["step_size"] == stats["step_size"][:, :1]).all()  # fixed after warmup
    # The starting Hamiltonian is the previous state's potential energy (-lp) plus kinetic >= 0.
    assert (stats["energy"][:, 1:] >= -stats["lp"][:, :-1] - 1e-9).all()


def test_eight_schools_chains_agree_and_match_the_known_posterior(schools_run) -> None:
    draws = finished(schools_run).draws
    for site in ("mu", "tau"):
        r_hat = float(split_gelman_rubin(torch.from_numpy(draws[site])))
        assert r_hat < 1.1, (site, r_hat)
    assert 3.0 < draws["mu"].mean() < 6.0  # posterior mean of mu is about 4.4
    assert 2.0 < draws["tau"].mean() < 5.5  # and of tau about 3.6


def test_same_seed_gives_same_draws_and_another_seed_other_draws() -> None:
    options = dict(warmup=30, samples=30, chains=2, jit=False, processes=False)
    first = finished(schools(**options)).draws
    again = finished(schools(**options)).draws
    other = finished(schools(**{**options, "seed": 2})).draws
    for site in first:
        np.testing.assert_array_equal(first[site], again[site])
    assert not np.array_equal(first["mu"], other["mu"])
    assert not np.array_equal(first["mu"][0], first["mu"][1])  # each chain its own seed


def test_thread_path_runs_chains_one_after_another() -> None:
    events = schools(warmup=100, samples=100, chains=2, processes=False, progress_every_s=0.05)
    assert isinstance(events[0], McmcStarted) and events[0].parallel == "sequential"
    progress = [e for e in events if isinstance(e, ChainProgress)]
    # The relay repeats both chains' counts: chain 1 stays at 0 until chain 0 has ended, then
    # runs to its end. (Whether a count of chain 1 mid-run is seen depends on how busy the
    # machine is: not asserted.)
    end_of_0 = min(i for i, e in enumerate(progress) if e.chain == 0 and e.done == 200)
    assert all(e.done == 0 for e in progress[:end_of_0] if e.chain == 1)
    assert all(e.done == 200 for e in progress[end_of_0:] if e.chain == 0)
    assert progress[-1].done == 200 and any(e.chain == 1 and e.done == 200 for e in progress)
    done = finished(events)
    assert done.jit and done.draws["theta"].shape == (2, 100, 8)


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


def test_model_that_cannot_be_traced_reruns_without_jit_and_says_so() -> None:
    data = {"x": [1.0, 2.0, 3.0, 4.0], "y": [2.1, 3.9, 6.2, 7.8]}
    events = list(run_mcmc(UNTRACEABLE, "features.py", "model", data, method="nuts",
                           warmup=60, samples=60, chains=1, seed=0, processes=False))  # fmt: skip
    assert isinstance(events[0], McmcStarted) and events[0].jit
    done = finished(events)
    assert not done.jit
    assert done.note.startswith(
        "jit_compile failed (RuntimeError: Cannot insert a Tensor that requires grad"
    ) and done.note.endswith("; ran without it")
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


def test_model_with_control_flow_on_a_draw_runs_without_jit_and_names_the_line() -> None:
    data = {"y": [0.3, -1.2, 2.5, 0.8, 1.1]}
    events = list(run_mcmc(BRANCHES, "robust.py", "model", data, method="nuts", warmup=50,
                           samples=50, chains=1, seed=0, processes=False))  # fmt: skip
    done = finished(events)
    assert not done.jit
    assert done.note == (
        "jit_compile failed (TracerWarning at robust.py line 8: Converting a tensor to a Python"
        " boolean might cause the trace to be incorrect); ran without it"
    )


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


def test_model_raising_in_a_chain_gives_model_error_with_the_users_line() -> None:
    data = {"sigma": [1.0, 2.0], "y": [0.5, -0.3]}
    events = run_mcmc(FAILS_LATER, "later.py", "model", data, method="nuts", warmup=200,
                      samples=200, chains=1, seed=0, jit=False)  # fmt: skip
    assert mcmc_started(next(events)).parallel == "processes"
    with pytest.raises(ModelError) as caught:
        list(events)
    assert str(caught.value) == (
        "the model raised KeyError: 'tau' at later.py line 11: `tau = params[\"tau\"]`"
    )
    assert multiprocessing.active_children() == []


def test_model_that_always_raises_fails_before_any_chain_starts() -> None:
    broken = source("""
        def model(y):
            return y + undefined
    """)
    events = run_mcmc(broken, "broken.py", "model", {"y": 1.0}, method="nuts", warmup=5,
                      samples=5, chains=2, seed=0)  # fmt: skip
    with pytest.raises(ModelError, match=r"NameError: name 'undefined' is not defined at "
                       r"broken.py line 2: `return y \+ undefined`"):  # fmt: skip
        next(events)
    assert multiprocessing.active_children() == []


def test_bad_data_and_bad_arguments_fail_before_any_chain_starts() -> None:
    ragged = {**SCHOOLS_DATA, "y": [[1], [2, 3]]}
    events = run_mcmc(SCHOOLS, "eight_schools.py", "model", ragged, method="nuts", warmup=5,
                      samples=5, chains=1, seed=0)  # fmt: skip
    with pytest.raises(DataError, match="data field `y`: ragged nested list"):
        next(events)
    with pytest.raises(SpecError, match="unknown MCMC method `gibbs`"):
        schools(method="gibbs", warmup=5, samples=5, chains=1)


def test_hmc_with_fixed_steps_records_stats_without_tree_depth() -> None:
    done = finished(schools(method="hmc", num_steps=8, warmup=50, samples=50, chains=1,
                            jit=False, processes=False))  # fmt: skip
    assert tuple(done.stats) == HMC_STATS
    assert all(v.shape == (1, 50) for v in done.stats.values())
    assert np.isfinite(done.stats["energy"]).all() and np.isfinite(done.stats["lp"]).all()


def test_closing_the_generator_mid_run_leaves_no_child_process() -> None:
    events = run_mcmc(SCHOOLS, "eight_schools.py", "model", SCHOOLS_DATA, method="nuts",
                      warmup=100_000, samples=100_000, chains=2, seed=0, jit=False,
                      progress_every_s=0.1)  # fmt: skip
    for event in events:
        if isinstance(event, ChainProgress) and event.done > 0:
            break
    children = multiprocessing.active_children()
    assert len(children) == 2 and all(c.name.startswith("kiln-mcmc-chain-") for c in children)
    pids = [c.pid for c in children]
    events.close()
    assert multiprocessing.active_children() == []
    for pid in pids:
        assert pid is not None  # a started process has one
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone, and reaped


def test_closing_a_thread_run_stops_it_at_its_next_iteration() -> None:
    events = run_mcmc(SCHOOLS, "eight_schools.py", "model", SCHOOLS_DATA, method="nuts",
                      warmup=100_000, samples=100_000, chains=2, seed=0, jit=False,
                      processes=False, progress_every_s=0.1)  # fmt: skip
    for event in events:
        if isinstance(event, ChainProgress) and event.done > 0:
            break
    events.close()
    assert not [t for t in threading.enumerate() if t.name == "kiln-mcmc"]


def _run_in_a_daemon(results: Any) -> None:
    events = list(run_mcmc(SCHOOLS, "eight_schools.py", "model", SCHOOLS_DATA, method="nuts",
                           warmup=10, samples=10, chains=2, seed=0, jit=False,
                           processes=True))  # fmt: skip
    results.put((mcmc_started(events[0]).parallel, finished(events).draws["mu"].shape))


def test_a_daemonic_process_like_a_celery_child_runs_chains_in_a_thread() -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    daemon = ctx.Process(target=_run_in_a_daemon, args=(results,), daemon=True)
    daemon.start()
    try:
        parallel, shape = results.get(timeout=60)
    finally:
        daemon.join(timeout=10)
    assert parallel == "sequential" and shape == (2, 10)

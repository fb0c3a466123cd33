"""hmm: a simulated 2-state series recovered (means, transitions, Viterbi path), the Ethereum
file's default series, and bad input named."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyro
import pyro.infer
import pyro.optim
import pytest
import torch

from inference.library import LibraryPrediction, Problem
from inference.models.hmm import HMM, forward_backward, viterbi
from kiln.errors import DataError, SpecError
from kiln.library import DataRef, parse_options
from kiln.library.hmm import HMM as HMM_CARD
from kiln.library.hmm import read_hmm_series

ETH = Path(__file__).resolve().parents[3] / "shared" / "data" / "ethusd_tweets.csv"
MEANS = np.array([-1.5, 2.0])
SDS = np.array([0.5, 0.8])
TRANSITION = np.array([[0.95, 0.05], [0.1, 0.9]])
T = 500
SEED = 5


def simulate(T: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(states, values) of the known 2-state Gaussian HMM, started from its stationary law."""
    rng = np.random.default_rng(seed)
    stationary = np.array([TRANSITION[1, 0], TRANSITION[0, 1]]) / TRANSITION[[0, 1], [1, 0]].sum()
    states = np.empty(T, dtype=np.int64)
    states[0] = rng.choice(2, p=stationary)
    for t in range(1, T):
        states[t] = rng.choice(2, p=TRANSITION[states[t - 1]])
    return states, rng.normal(MEANS[states], SDS[states])


def as_csv(values: np.ndarray, with_gaps: bool = False) -> bytes:
    cells = [f"{v:.6f}" for v in values]
    if with_gaps:
        cells[10], cells[20] = "null", ""
    return ("t,y\n" + "".join(f"{t},{c}\n" for t, c in enumerate(cells))).encode()


def fit(problem: Problem, lr: float) -> list[float]:
    """The caller-owned SVI loop the runner will run: one step per `problem.batch(step)`."""
    elbo_class = getattr(pyro.infer, problem.elbo)
    if problem.max_plate_nesting is not None:
        elbo = elbo_class(max_plate_nesting=problem.max_plate_nesting)
    else:
        elbo = elbo_class()
    optim = pyro.optim.Adam({"lr": lr})  # type: ignore[attr-defined]
    svi = pyro.infer.SVI(problem.model, problem.guide, optim, loss=elbo)
    losses = []
    for step in range(problem.steps):
        args, kwargs = problem.batch(step)
        losses.append(svi.step(*args, **kwargs))
    return losses


@dataclass
class Fitted:
    states: np.ndarray
    problem: Problem
    prediction: LibraryPrediction
    fit_s: float


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    # Small models on a busy 2-core machine: torch's second intra-op thread costs 4x.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted(one_thread: None) -> Fitted:
    states, values = simulate(T, SEED)
    options = parse_options(HMM_CARD, {"column": "y", "steps": "300"})
    problem = HMM.prepare(options, DataRef("csv", "sim.csv", as_csv(values)), seed=SEED,
                          device="cpu")  # fmt: skip
    start = time.perf_counter()
    losses = fit(problem, options["lr"])
    fit_s = time.perf_counter() - start
    assert all(math.isfinite(x) for x in losses)
    return Fitted(states, problem, HMM.predict(problem, num_samples=200, seed=SEED), fit_s)


def test_fit_recovers_the_means_and_the_transition_probabilities(fitted: Fitted) -> None:
    point = fitted.prediction.info["point"]
    print(f"\nhmm T={T}: fit {fitted.fit_s:.1f}s ({fitted.problem.steps} steps), {point},"
          f" {fitted.prediction.metrics}")  # fmt: skip
    np.testing.assert_allclose(point["means"], MEANS, atol=0.1)
    np.testing.assert_allclose(point["transition"], TRANSITION, atol=0.1)
    np.testing.assert_allclose(point["sds"], SDS, atol=0.1)
    sites = fitted.prediction.sites
    for name, shape in (("means", (200, 2)), ("sds", (200, 2)), ("transition", (200, 2, 2))):
        kind, draws = sites[name]
        assert kind == "posterior" and draws.shape == shape
    np.testing.assert_allclose(sites["means"][1].mean(axis=0), MEANS, atol=0.1)
    np.testing.assert_allclose(sites["transition"][1].mean(axis=0), TRANSITION, atol=0.1)
    assert (np.diff(sites["means"][1].mean(axis=0)) > 0).all()  # states sorted by mean
    assert fitted.fit_s < 60


def test_state_probabilities_and_the_viterbi_path_follow_the_true_states(fitted: Fitted) -> None:
    kind, probs = fitted.prediction.sites["state_probs"]
    assert kind == "deterministic" and probs.shape == (1, T, 2)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-9)
    kind, path = fitted.prediction.sites["states"]
    assert kind == "deterministic" and path.shape == (1, T) and path.dtype == np.int64
    assert (path[0] == fitted.states).mean() > 0.9
    assert (probs[0].argmax(axis=-1) == fitted.states).mean() > 0.9
    assert math.isfinite(fitted.prediction.metrics["log_likelihood"])


def test_forward_backward_and_viterbi_agree_with_brute_force_on_a_short_series() -> None:
    y = np.array([-1.4, 1.9, 2.2, -1.6])
    initial = np.array([0.3, 0.7])
    paths = np.array(np.meshgrid(*[[0, 1]] * len(y), indexing="ij")).reshape(len(y), -1).T
    weights = np.empty(len(paths))
    for i, path in enumerate(paths):
        p = initial[path[0]] * np.prod(TRANSITION[path[:-1], path[1:]])
        z = (y - MEANS[path]) / SDS[path]
        weights[i] = p * np.prod(np.exp(-0.5 * z**2) / (SDS[path] * math.sqrt(2 * math.pi)))
    probs, log_p = forward_backward(y, initial, TRANSITION, MEANS, SDS)
    assert log_p == pytest.approx(math.log(weights.sum()))
    for t in range(len(y)):
        assert probs[t, 1] == pytest.approx(weights[paths[:, t] == 1].sum() / weights.sum())
    np.testing.assert_array_equal(viterbi(y, initial, TRANSITION, MEANS, SDS),
                                  paths[weights.argmax()])  # fmt: skip


def test_batches_are_the_whole_series_at_every_step(fitted: Fitted) -> None:
    problem = fitted.problem
    assert problem.steps_per_epoch == 1 and problem.epochs == 300 and problem.loss_items == T
    args, kwargs = problem.batch(0)
    assert args == () and kwargs["y"].shape == (T,)
    assert problem.batch(7)[1]["y"] is kwargs["y"]


def test_the_ethereum_file_gives_the_daily_percent_change_of_close_by_default() -> None:
    options = parse_options(HMM_CARD, {})
    facts = HMM_CARD.check(options, DataRef("csv", ETH.name, ETH.read_bytes()))
    assert facts["column"] == "Close" and facts["series"] == "daily % change of Close"
    assert facts["rows"] == 899 and facts["dropped"] == {} and facts["T"] == 898
    assert facts["ignored"]["Tweets null"] == 16  # Tweets is not used: counted, not dropped
    assert (facts["from"], facts["to"]) == ("2015-08-08", "2018-01-21")
    series = read_hmm_series(ETH.read_bytes(), name=ETH.name)
    assert series.values[-1] == pytest.approx(100 * (1049.58 / 1155.15 - 1))


def test_missing_cells_are_dropped_and_counted() -> None:
    _, values = simulate(50, SEED)
    series = read_hmm_series(as_csv(values, with_gaps=True), name="gaps.csv")  # first numeric: t
    assert series.facts["column"] == "t" and series.facts["dropped"] == {}
    series = read_hmm_series(as_csv(values, with_gaps=True), column="y", name="gaps.csv")
    assert series.facts["dropped"] == {"y empty": 1, "y null": 1}
    assert series.values.size == 48


def test_bad_options_and_data_are_named() -> None:
    data = DataRef("csv", "sim.csv", as_csv(simulate(50, SEED)[1]))
    with pytest.raises(DataError, match="column `price` not in `sim.csv`") as caught:
        HMM_CARD.check(parse_options(HMM_CARD, ["column=price"]), data)
    assert caught.value.column == "price"
    with pytest.raises(SpecError, match="states=1"):
        HMM_CARD.check(parse_options(HMM_CARD, ["states=1"]), data)
    with pytest.raises(SpecError, match="states=6: `sim.csv` has 50 usable points"):
        HMM_CARD.check(parse_options(HMM_CARD, ["states=6", "column=y"]), data)
    with pytest.raises(SpecError, match="FILE.csv"):
        HMM_CARD.check(parse_options(HMM_CARD, {}), DataRef("builtin", "digits"))

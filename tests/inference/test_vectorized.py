"""fit_many() and run_many(): a vectorised batch of rugged fits matches single fits; a NaN member
fails alone; run_many reports progress as events and stops when closed."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch

from inference.events import BatchFinished, BatchStep
from inference.fit import prepare_fit
from inference.models.linreg import LinReg
from inference.svi import run_svi
from inference.vector_model import _initial_values, _Priors
from inference.vectorized import ManyResult, fit_many, run_many
from kiln.errors import SpecError
from kiln.tables import Design, build_design, read_csv_bytes
from tests.conftest import RUGGED, RUGGED_FORMULA

STEPS = 1000
# At the tutorial's lr 0.02 the last steps of one SVI run jitter by about 0.05 on the intercept,
# so two runs (vectorised or not) can differ by that much; at 0.005 they agree to ~0.03.
LR = 0.005
SLOPES = ("cont_africa", "rugged", "cont_africa:rugged")


@pytest.fixture(scope="module")
def design() -> Design:
    frame = read_csv_bytes(RUGGED.read_bytes(), "rugged_data.csv")
    return build_design(frame, RUGGED_FORMULA)


@pytest.fixture(scope="module")
def single_means() -> dict[str, float]:
    """Posterior means of one ordinary fit (prepare_fit + run_svi) with the same settings."""
    frame = read_csv_bytes(RUGGED.read_bytes(), "rugged_data.csv")
    p = prepare_fit("linreg", frame, formula=RUGGED_FORMULA, guide="AutoNormal", seed=0)
    for _ in run_svi(p.model, p.guide, p.args, p.kwargs, steps=STEPS, lr=LR):
        pass
    draws = pyro.infer.Predictive(
        p.model, guide=p.guide, num_samples=4000, return_sites=list(p.latent_sites)
    )(*p.args)
    return {site: float(values.mean()) for site, values in draws.items()}


def means(result, k: int) -> dict[str, float]:
    return {site: stats["mean"] for site, stats in result.members[k].params.items()}


def assert_close_to(ours: dict[str, float], ref: dict[str, float], atol: float) -> None:
    torch.testing.assert_close(
        torch.tensor([ours[s] for s in ref]), torch.tensor(list(ref.values())), atol=atol, rtol=0
    )


def test_each_member_of_a_batch_matches_a_single_fit(design, single_means) -> None:
    result = fit_many(design.X, design.y, terms=design.terms, members=4, weights=None,
                      seeds=[0, 1, 2, 3], steps=STEPS, lr=LR)  # fmt: skip
    assert result.losses.shape == (STEPS, 4) and np.isfinite(result.losses).all()
    assert [m.status for m in result.members] == ["ok"] * 4
    for k in range(4):
        assert_close_to(means(result, k), single_means, atol=0.05)
        stats = result.members[k].params["rugged"]
        assert stats["q05"] < stats["q50"] < stats["q95"] and stats["sd"] > 0
    assert single_means["cont_africa:rugged"] > 0 > single_means["rugged"]  # the known answer


def test_bootstrap_members_differ_but_stay_near_the_full_data_fit(design, single_means) -> None:
    rows = len(design.y)
    weights = np.random.default_rng(0).multinomial(rows, np.full(rows, 1 / rows), size=8)
    result = fit_many(design.X, design.y, terms=design.terms, members=8, weights=weights,
                      seeds=range(8), steps=STEPS, lr=LR)  # fmt: skip
    assert result.ok == tuple(range(8))
    slopes = np.array([[means(result, k)[s] for s in SLOPES] for k in range(8)])
    assert (slopes.std(axis=0) > 0.02).all(), slopes  # resamples give different answers
    assert np.abs(slopes - [single_means[s] for s in SLOPES]).max() < 0.5


def test_a_member_whose_loss_overflows_fails_alone(design, single_means) -> None:
    weights = np.ones((5, len(design.y)))
    weights[2] = 1e37  # finite weights whose weighted log-likelihood overflows float32
    result = fit_many(design.X, design.y, terms=design.terms, members=5, weights=weights,
                      seeds=range(5), steps=STEPS, lr=LR)  # fmt: skip
    failed = result.members[2]
    assert failed.status == "failed" and failed.failed_step == 0 and failed.params == {}
    assert failed.reason is not None
    assert "loss is inf at step 0" in failed.reason and "weights" in failed.reason
    assert np.isnan(result.losses[:, 2]).all()
    assert result.ok == (0, 1, 3, 4)
    assert np.isfinite(np.delete(result.losses, 2, axis=1)).all()
    for k in result.ok:
        assert_close_to(means(result, k), single_means, atol=0.05)


def test_weighted_start_is_least_squares_on_the_repeated_rows(design) -> None:
    counts = np.random.default_rng(1).multinomial(len(design.y), np.full(len(design.y), 0.0059),
                                                  size=1)  # fmt: skip
    X, y = torch.tensor(design.X, dtype=torch.float32), torch.tensor(design.y, dtype=torch.float32)
    priors = _Priors.of(design.terms, [None] * len(counts), "cpu")
    start = _initial_values(priors, X, y, torch.tensor(counts, dtype=torch.float32))
    repeat = torch.tensor(np.repeat(np.arange(len(design.y)), counts[0]))
    expected = LinReg(design.terms).initial_values(X[repeat], y[repeat])
    for site, value in expected.items():
        torch.testing.assert_close(start[site][0, 0], value, atol=1e-4, rtol=1e-4)


def test_a_guide_that_couples_members_is_refused(design) -> None:
    with pytest.raises(SpecError, match="AutoMultivariateNormal` cannot be vectorised"):
        fit_many(design.X, design.y, terms=design.terms, members=2, weights=None, seeds=[0, 1],
                 steps=1, lr=LR, guide="AutoMultivariateNormal")  # fmt: skip


def test_a_member_whose_lr_is_too_large_fails_alone_and_leaves_the_others_bitwise(design) -> None:
    def run(bad_lr: float) -> ManyResult:
        return fit_many(design.X, design.y, terms=design.terms, members=3, weights=None,
                        seeds=[0, 1, 2], steps=300, lr=[LR, bad_lr, 0.02],
                        num_samples=50)  # fmt: skip

    bad, good = run(1e3), run(LR)
    failed = bad.members[1]
    assert failed.status == "failed" and failed.failed_step is not None
    assert failed.failed_step < 5 and "lr (now 1000)" in (failed.reason or "")
    assert bad.ok == (0, 2) and good.ok == (0, 1, 2)
    # the same random stream, and no leak from the failed member: equal to the last bit
    np.testing.assert_array_equal(bad.losses[:, [0, 2]], good.losses[:, [0, 2]])
    assert means(bad, 0) == means(good, 0)


def test_groups_in_one_batch_each_match_their_own_fit() -> None:
    """Members with their own (padded) designs: each group's fit as if it were alone."""
    frame = read_csv_bytes(RUGGED.read_bytes(), "rugged_data.csv")
    formula = "log(rgdppc_2000) ~ rugged"
    groups = [build_design(frame[frame["cont_africa"] == g], formula) for g in (0, 1)]
    rows = max(d.rows_used for d in groups)
    X, y, w = np.zeros((2, rows, 2)), np.zeros((2, rows)), np.zeros((2, rows))
    for k, d in enumerate(groups):
        X[k, : d.rows_used], y[k, : d.rows_used], w[k, : d.rows_used] = d.X, d.y, 1
    together = fit_many(X, y, terms=groups[0].terms, members=2, weights=w, seeds=[0, 1],
                        steps=STEPS, lr=LR)  # fmt: skip
    for k, d in enumerate(groups):
        alone = fit_many(d.X, d.y, terms=d.terms, members=1, weights=None, seeds=[k],
                         steps=STEPS, lr=LR)  # fmt: skip
        assert_close_to(means(together, k), means(alone, 0), atol=0.05)
    # the tutorial's finding: ruggedness goes with lower GDP outside Africa, higher inside
    assert means(together, 0)["rugged"] < 0 < means(together, 1)["rugged"]


def test_each_member_fits_with_its_own_priors(design, single_means) -> None:
    """Member 1's tight prior pins its `rugged` slope near 0; members 0 and 2 (the default
    priors) fit what a single fit does: one batch, one tensor row of priors per member."""
    tight: dict[str, dict[str, float | str]] = {
        "rugged": {"dist": "normal", "loc": 0.0, "scale": 0.01},
        "sigma": {"dist": "uniform", "low": 0.0, "high": 2.0},
    }
    result = fit_many(design.X, design.y, terms=design.terms, members=3, weights=None,
                      seeds=[0, 1, 2], steps=STEPS, lr=LR, priors=[None, tight, None])  # fmt: skip
    assert [m.status for m in result.members] == ["ok"] * 3
    assert abs(means(result, 1)["rugged"]) < 0.05
    assert abs(single_means["rugged"]) > 0.1  # so the prior, not the data, put it there
    for k in (0, 2):
        assert_close_to(means(result, k), single_means, atol=0.05)
    with pytest.raises(SpecError, match="prior for `ruggd`: no such site"):
        fit_many(design.X, design.y, terms=design.terms, members=2, weights=None, seeds=[0, 1],
                 steps=2, lr=LR, priors=[None, {"ruggd": {"loc": 0, "scale": 1}}])  # fmt: skip


def test_run_many_yields_increasing_steps_then_the_result_fit_many_returns(design) -> None:
    kwargs = dict(terms=design.terms, members=3, weights=None, seeds=[0, 1, 2], steps=120,
                  lr=[LR, 1e3, 0.02], num_samples=200)  # fmt: skip
    events = list(run_many(design.X, design.y, progress_every=50, **kwargs))
    steps = [e for e in events if isinstance(e, BatchStep)]
    finished = events[-1]
    assert events[:-1] == steps and isinstance(finished, BatchFinished)
    assert [(e.step, e.total) for e in steps] == [(50, 120), (100, 120), (120, 120)]
    assert all(e.alive == 2 for e in steps)  # member 1 diverged at once
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    alone = fit_many(design.X, design.y, **kwargs)
    ours = finished.result
    assert ours.ok == alone.ok == (0, 2)
    np.testing.assert_array_equal(ours.losses, alone.losses)
    for k in ours.ok:  # the same random stream and steps: equal to the last bit
        assert means(ours, k) == means(alone, k)


def test_closing_run_many_stops_the_batch_and_leaves_validation_as_it_was(design) -> None:
    events = run_many(design.X, design.y, terms=design.terms, members=2, weights=None,
                      seeds=[0, 1], steps=10_000, lr=LR, progress_every=5)  # fmt: skip
    with pyro.validation_enabled(True):
        first = next(events)
        # suspended at a yield: the batch's validation-off setting does not leak out
        assert pyro.distributions.is_validation_enabled()
        events.close()
    assert first == BatchStep(step=5, total=10_000, alive=2)
    with pytest.raises(StopIteration):
        next(events)


def test_run_many_checks_its_arguments_when_the_first_event_is_asked_for(design) -> None:
    events = run_many(design.X, design.y, terms=design.terms, members=2, weights=None,
                      seeds=[0, 1], steps=10, lr=LR, progress_every=0)  # fmt: skip
    with pytest.raises(SpecError, match="progress_every must be >= 1"):
        next(events)

"""Expanding a sweep into members, packing them into batches, the rows each member fits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
import torch

from inference.vector_loss import _Adam
from kiln.errors import DataError, SpecError
from kiln.priors import NormalPrior, Prior, UniformPrior
from kiln.sweepspec import SweepSpec, parse_sweep_spec
from kiln.tables import build_design, group_values, member_design, read_csv_bytes
from scheduler.limits import Limits
from scheduler.packing import plan
from scheduler.sweep import batch_size, expand
from tests.conftest import RUGGED, RUGGED_FORMULA

LIMITS = Limits(max_steps=10**6, max_attempts=3, max_predict_samples=10**5,
                max_predict_values=10**7)  # fmt: skip


def sweep(base_priors: dict[str, Any] | None = None, **fields: Any) -> SweepSpec:
    base = {"model": "linreg", "formula": RUGGED_FORMULA, "steps": 100,
            "priors": base_priors or {}}  # fmt: skip
    return parse_sweep_spec({"kind": "sweep", "base": base, **fields})


def normal(prior: Prior) -> NormalPrior:
    assert isinstance(prior, NormalPrior)
    return prior


def uniform(prior: Prior) -> UniformPrior:
    assert isinstance(prior, UniformPrior)
    return prior


def tensor_sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """sum() of tensors: a tensor (there is at least one term)."""
    return cast(torch.Tensor, sum(terms))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return read_csv_bytes(RUGGED.read_bytes(), "rugged_data.csv")


def test_members_are_every_combination_of_grid_seeds_and_resamples() -> None:
    spec = sweep(grid={"lr": ["0.005", "0.01", "0.02"], "guide": ["AutoNormal",
                 "AutoMultivariateNormal"]}, seeds=2, bootstrap=3)  # fmt: skip
    members = expand(spec, seed=10, groups=None)
    assert len(members) == 3 * 2 * 2 * 3
    assert [m.index for m in members] == list(range(36))
    first = members[0]
    assert first.settings == {"lr": 0.005, "guide": "AutoNormal", "seed": 10, "bootstrap": 0}
    assert first.spec.lr == 0.005 and first.spec.seed == 10 and first.spec.bootstrap == 0
    assert first.spec.bootstrap_seed == 10  # the same replicate for every grid point and seed
    assert {m.spec.seed for m in members} == {10, 11}
    assert len({(m.spec.lr, m.spec.guide, m.spec.seed, m.spec.bootstrap) for m in members}) == 36


def test_a_prior_grid_packs_into_one_batch_with_each_members_priors() -> None:
    spec = sweep(grid={"prior.rugged": ["normal(0, 0.1)", "normal(0,10)"], "lr": ["0.01", "0.02"]},
                 base_priors={"sigma": {"dist": "uniform", "low": 0, "high": 5}})  # fmt: skip
    members = expand(spec, seed=0, groups=None)
    assert [m.settings["prior.rugged"] for m in members] == ["normal(0, 0.1)"] * 2 + [
        "normal(0, 10)"] * 2  # fmt: skip
    assert normal(members[0].spec.priors["rugged"]).scale == 0.1
    assert normal(members[3].spec.priors["rugged"]).scale == 10 and members[3].spec.lr == 0.02
    assert all(uniform(m.spec.priors["sigma"]).high == 5 for m in members)  # the base's prior kept
    packed = plan(spec, members, {None: ("Intercept", "rugged")}, size=8)
    assert packed.batches == [[0, 1, 2, 3]] and packed.single == []


def test_packing_keeps_apart_what_cannot_share_a_program() -> None:
    spec = sweep(grid={"lr": ["0.005", "0.01"], "guide": ["AutoNormal", "AutoMultivariateNormal"],
                       "steps": ["100", "200"]}, seeds=3)  # fmt: skip
    members = expand(spec, seed=0, groups=None)
    terms: dict[str | None, tuple[str, ...]] = {None: ("Intercept", "x")}
    packed = plan(spec, members, terms, size=4)
    by_index = {m.index: m for m in members}
    for batch in packed.batches:
        specs = [by_index[i].spec for i in batch]
        assert {s.guide for s in specs} == {"AutoNormal"} and len({s.steps for s in specs}) == 1
        assert len(batch) <= 4
    packed_ids = sorted(i for b in packed.batches for i in b)
    assert sorted(packed_ids + packed.single) == list(range(len(members)))
    assert all(by_index[i].spec.guide == "AutoMultivariateNormal" for i in packed.single)
    assert "couples" in packed.why_single[packed.single[0]]
    # each steps value: 2 lr x 3 seeds = 6 AutoNormal members -> batches of 4 and 2
    assert sorted(len(b) for b in packed.batches) == [2, 2, 4, 4]
    off = plan(sweep(grid={"lr": ["0.01", "0.02"]}, vectorize="off"), members[:2], terms, 4)
    assert off.batches == [] and off.single == [0, 1]


def test_vectorize_on_refuses_a_member_that_cannot_be_packed() -> None:
    spec = sweep(grid={"guide": ["AutoNormal", "AutoLowRankMultivariateNormal"]}, seeds=2,
                 vectorize="on")  # fmt: skip
    with pytest.raises(SpecError, match="AutoLowRankMultivariateNormal couples"):
        plan(spec, expand(spec, 0, None), {None: ("a",)}, 8)


def test_a_bad_grid_value_names_itself() -> None:
    with pytest.raises(SpecError, match="--grid guide=AutoMagic"):
        expand(sweep(grid={"guide": ["AutoNormal", "AutoMagic"]}), 0, None)
    with pytest.raises(SpecError, match="grid key `sigma` cannot be swept"):
        sweep(grid={"sigma": ["1"]})
    with pytest.raises(SpecError, match="--grid lr=fast: not a float"):
        expand(sweep(grid={"lr": ["fast"]}), 0, None)


def test_default_batch_size_follows_the_memory_budget() -> None:
    spec = sweep(bootstrap=10)
    small = batch_size(spec, rows=170, terms=5, limits=LIMITS)
    assert small == LIMITS.sweep_max_batch  # rugged members are tiny: the cap decides
    big = batch_size(spec, rows=2_000_000, terms=5, limits=LIMITS)
    assert 1 <= big < 10  # 2M rows per member: a handful fit 512 MB
    assert batch_size(sweep(batch_size=7), rows=170, terms=5, limits=LIMITS) == 7


def test_bootstrap_counts_are_a_reproducible_resample(frame) -> None:
    design, counts = member_design(frame, RUGGED_FORMULA, bootstrap=3, bootstrap_seed=42)
    again = member_design(frame, RUGGED_FORMULA, bootstrap=3, bootstrap_seed=42)[1]
    other = member_design(frame, RUGGED_FORMULA, bootstrap=4, bootstrap_seed=42)[1]
    assert counts.sum() == design.rows_used == 170 and (counts >= 0).all()
    np.testing.assert_array_equal(counts, again)
    assert (counts != other).any() and (counts == 0).sum() > 30  # ~1/e of the rows left out
    _, ones = member_design(frame, RUGGED_FORMULA)
    assert (ones == 1).all()


def test_a_group_is_fitted_on_its_own_rows(frame) -> None:
    assert group_values(frame, "cont_africa") == ["0", "1"]
    design, counts = member_design(frame, "log(rgdppc_2000) ~ rugged", group_by="cont_africa",
                                   group="1")  # fmt: skip
    full = build_design(frame, "log(rgdppc_2000) ~ rugged")
    africa = frame["cont_africa"].to_numpy()[full.row_index] == 1
    assert design.rows_used == africa.sum() == 49
    np.testing.assert_array_equal(design.X, full.X[africa])
    np.testing.assert_array_equal(design.row_index, full.row_index[africa])  # whole-table rows
    with pytest.raises(DataError, match="--group-by column `continent` not in data"):
        group_values(frame, "continent")
    with pytest.raises(DataError, match="no row has cont_africa = 7"):
        member_design(frame, RUGGED_FORMULA, group_by="cont_africa", group="7")


def test_per_member_adam_is_torchs_adam() -> None:
    """Two parameters of different shapes, one learning rate per member, a dead member."""
    torch.manual_seed(0)
    starts = [torch.randn(3, 2), torch.randn(3, 1, 2)]
    ours = [s.clone().requires_grad_() for s in starts]
    theirs = [[s[k].clone().requires_grad_() for s in starts] for k in range(3)]
    rates = [0.1, 0.01, 0.5]
    adam = _Adam(ours, torch.tensor(rates))
    optims = [torch.optim.Adam(theirs[k], lr=rates[k]) for k in range(3)]
    alive = torch.tensor([True, True, False])
    for _ in range(20):
        targets = [torch.randn_like(s) for s in starts]
        for p in ours:
            p.grad = None
        # Tensor.backward is unannotated in torch; torch.autograd.backward is what it calls
        torch.autograd.backward(
            tensor_sum(((p - t) ** 2).sum() for p, t in zip(ours, targets, strict=True))
        )
        adam.step(adam.gradients(), alive)
        for k in range(2):
            optims[k].zero_grad()
            torch.autograd.backward(
                tensor_sum(((p - t[k]) ** 2).sum() for p, t in zip(theirs[k], targets, strict=True))
            )
            optims[k].step()
    for k in range(2):
        for p, q in zip(ours, theirs[k], strict=True):
            torch.testing.assert_close(p[k].detach(), q.detach(), rtol=1e-6, atol=1e-6)
    for p, s in zip(ours, starts, strict=True):
        torch.testing.assert_close(p[2].detach(), s[2])  # a dead member does not move

"""Fast tests of the pure-torch NUTS/HMC sampler: accuracy, adaptation, bitwise resume, decoding."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from inference.nuts import (
    ChainState,
    GradFn,
    SamplerConfig,
    checkpoint_slots,
    decode_state,
    encode_state,
    init_state,
    select_chains,
    step,
)
from inference.nuts_adapt import warmup_schedule

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
Stats = dict[str, Tensor]


def gaussian(mean: Tensor, cov: Tensor) -> GradFn:
    precision = torch.linalg.inv(cov)
    precision = 0.5 * (precision + precision.T)

    def grad_fn(z: Tensor) -> tuple[Tensor, Tensor]:
        x = z - mean
        g = x @ precision
        return 0.5 * (x * g).sum(-1), g

    return grad_fn


def diagonal(mean: Tensor, scale: Tensor) -> GradFn:
    def grad_fn(z: Tensor) -> tuple[Tensor, Tensor]:
        x = (z - mean) / scale
        return 0.5 * (x * x).sum(-1), x / scale

    return grad_fn


def run(
    state: ChainState, grad_fn: GradFn, config: SamplerConfig, n: int
) -> tuple[ChainState, list[Tensor], list[Stats]]:
    draws, stats = [], []
    for _ in range(n):
        state, s = step(state, grad_fn, config)
        draws.append(state.z)
        stats.append(s)
    return state, draws, stats


def stacked(stats: list[Stats], name: str) -> Tensor:
    return torch.stack([s[name] for s in stats])


def roundtrip(state: ChainState) -> ChainState:
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **encode_state(state))
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        return decode_state({k: npz[k] for k in npz.files})


def assert_same(a: tuple[list[Tensor], list[Stats]], b: tuple[list[Tensor], list[Stats]]) -> None:
    assert len(a[0]) == len(b[0])
    for za, zb in zip(a[0], b[0], strict=True):
        assert torch.equal(za, zb)
    for sa, sb in zip(a[1], b[1], strict=True):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


SCALES = torch.tensor([0.1, 0.5, 1.0, 3.0, 10.0], dtype=F64)
MEAN = torch.tensor([1.0, -2.0, 0.0, 3.0, 5.0], dtype=F64)


def correlated_cov() -> Tensor:
    idx = torch.arange(5, dtype=F64)
    corr = 0.5 ** (idx[:, None] - idx[None, :]).abs()
    return SCALES[:, None] * corr * SCALES[None, :]


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_gaussian_moments_and_adaptation(method: str) -> None:
    cov = correlated_cov()
    grad_fn = gaussian(MEAN, cov)
    # 500 warmup for both: with 300, HMC's (3 steps) last slow window is short, and its mass
    # estimate of the scale-10 coordinate came out at 0.2 of the variance for some seeds.
    warmup, draws_n = 500, 500
    # Depth 7 caps the first window's trees (identity metric, scales 0.1 to 10): test time.
    config = SamplerConfig(
        method, warmup, max_tree_depth=7, num_steps=3 if method == "hmc" else None
    )
    state = init_state(grad_fn, torch.zeros(4, 5, dtype=F64), config, [11, 12, 13, 14])
    state, _, _ = run(state, grad_fn, config, warmup)
    state, draws, stats = run(state, grad_fn, config, draws_n)
    x = torch.stack(draws).reshape(-1, 5)
    sd = cov.diagonal().sqrt()
    assert ((x.mean(0) - MEAN).abs() < 0.25 * sd).all(), (x.mean(0) - MEAN) / sd
    assert ((x.var(0) / cov.diagonal() - 1).abs() < 0.3).all(), x.var(0) / cov.diagonal()
    ratio = state.inv_mass / cov.diagonal()
    assert ((ratio > 0.4) & (ratio < 2.5)).all(), ratio
    assert not stacked(stats, "diverging").any()
    assert 0.6 < float(stacked(stats, "accept_prob").mean()) < 0.95
    assert torch.equal(stacked(stats, "step_size")[-1], state.step_size)
    assert torch.equal(stacked(stats, "lp")[-1], -state.pe)
    depth = stacked(stats, "tree_depth")
    assert depth.dtype == torch.int64 and stacked(stats, "n_steps").dtype == torch.int64
    if method == "hmc":
        assert (depth == 0).all() and (stacked(stats, "n_steps") == 3).all()
    else:
        assert ((depth >= 1) & (depth <= 7)).all()
        assert (stacked(stats, "n_steps") < 2 ** (depth + 1)).all()


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_one_step_keeps_the_target(method: str) -> None:
    """Exact draws stay exact draws: 2000 chains, fixed step size and a mismatched metric."""
    scale = torch.tensor([1.0, 3.0, 0.5], dtype=F64)
    grad_fn = diagonal(torch.zeros(3, dtype=F64), scale)
    config = SamplerConfig(method, warmup=0, max_tree_depth=4, num_steps=3)
    c = 2000
    z0 = torch.randn(c, 3, generator=torch.Generator().manual_seed(5), dtype=F64) * scale
    state = init_state(grad_fn, z0, config, range(c))
    state = replace(
        state,
        step_size=torch.full((c,), 0.9, dtype=F64),
        inv_mass=torch.tensor([1.0, 4.0, 1.0], dtype=F64).expand(c, 3).clone(),
    )
    state, _, stats = run(state, grad_fn, config, 3)
    x = state.z / scale
    assert (x.mean(0).abs() < 0.1).all(), x.mean(0)
    assert ((x.var(0) - 1).abs() < 0.12).all(), x.var(0)
    assert 0.3 < float(stacked(stats, "accept_prob").mean()) < 0.95


def test_funnel_runs_and_reports_divergences() -> None:
    def funnel(z: Tensor) -> tuple[Tensor, Tensor]:
        v, x = z[:, 0], z[:, 1:]
        pe = v * v / 18.0 + 0.5 * (x * x).sum(-1) * torch.exp(-v) + 0.5 * x.shape[1] * v
        gv = v / 9.0 - 0.5 * (x * x).sum(-1) * torch.exp(-v) + 0.5 * x.shape[1]
        return pe, torch.cat([gv[:, None], x * torch.exp(-v)[:, None]], 1)

    config = SamplerConfig("nuts", warmup=100, max_tree_depth=6)
    state = init_state(funnel, torch.zeros(2, 4, dtype=F64), config, [3, 4])
    state, draws, stats = run(state, funnel, config, 150)
    div = stacked(stats, "diverging")
    assert div.dtype == torch.bool and div.shape == (150, 2)
    assert torch.isfinite(torch.stack(draws)).all() and torch.isfinite(state.pe).all()
    for name in ("accept_prob", "energy", "lp", "step_size"):
        assert torch.isfinite(stacked(stats, name)).all(), name


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_infinite_potential_region_never_leaks(method: str) -> None:
    """A standard normal truncated to z0 < 1: +inf (and a NaN gradient) beyond the wall."""

    def truncated(z: Tensor) -> tuple[Tensor, Tensor]:
        wall = z[:, :1] >= 1.0
        pe = torch.where(wall[:, 0], math.inf, 0.5 * (z * z).sum(-1))
        return pe, torch.where(wall, math.nan, z)

    config = SamplerConfig(method, warmup=100, num_steps=4)
    state = init_state(truncated, torch.zeros(4, 2, dtype=F64), config, [1, 2, 3, 4])
    state, draws, stats = run(state, truncated, config, 300)
    x = torch.stack(draws[100:]).reshape(-1, 2)
    assert torch.isfinite(x).all() and (x[:, 0] < 1.0).all()
    for t in (state.z, state.pe, state.grad, state.step_size, state.inv_mass, state.da_h_bar):
        assert torch.isfinite(t).all()
    for name in ("accept_prob", "energy", "lp", "step_size"):
        assert torch.isfinite(stacked(stats, name)).all(), name
    assert stacked(stats, "diverging").any()  # hitting the wall is a divergence
    # E[z0 | z0 < 1] = -phi(1) / Phi(1) = -0.2876
    assert abs(float(x[:, 0].mean()) + 0.2876) < 0.15


@pytest.mark.parametrize("method", ["nuts", "hmc"])
# k inside the slow window [6, 36) of warmup 40, m across its end and warmup's; k in sampling
@pytest.mark.parametrize(("k", "m"), [(12, 30), (45, 10)])
def test_resume_is_bitwise(method: str, k: int, m: int) -> None:
    grad_fn = gaussian(MEAN[:3], correlated_cov()[:3, :3])
    config = SamplerConfig(method, warmup=40, max_tree_depth=6)  # HMC: 2 pi / step size steps
    assert warmup_schedule(40) == (6, 36, (35,))
    start = init_state(grad_fn, torch.ones(3, 3, dtype=F64), config, [7, 8, 9])
    end, z_all, s_all = run(start, grad_fn, config, k + m)
    half, z_first, s_first = run(start, grad_fn, config, k)
    if k < 40:
        assert 0 < half.welford_count < 30 and half.mass_window == 0
    resumed, z_second, s_second = run(roundtrip(half), grad_fn, config, m)
    assert_same((z_all, s_all), (z_first + z_second, s_first + s_second))
    a, b = encode_state(end), encode_state(resumed)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert resumed.mass_window == 1 and resumed.iteration == k + m


def test_resume_in_a_fresh_process(tmp_path: Path) -> None:
    grad_fn = diagonal(MEAN[:2], SCALES[2:4])
    config = SamplerConfig("nuts", warmup=30)
    state = init_state(grad_fn, torch.zeros(2, 2, dtype=F64), config, [21, 22])
    state, _, _ = run(state, grad_fn, config, 10)
    np.savez(tmp_path / "state.npz", allow_pickle=False, **encode_state(state))
    _, draws, stats = run(state, grad_fn, config, 25)
    script = textwrap.dedent(
        """
        import sys, numpy as np, torch
        from inference.nuts import SamplerConfig, decode_state, step
        mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
        scale = torch.tensor([1.0, 3.0], dtype=torch.float64)
        def grad_fn(z):
            x = (z - mean) / scale
            return 0.5 * (x * x).sum(-1), x / scale
        with np.load(sys.argv[1], allow_pickle=False) as f:
            state = decode_state({k: f[k] for k in f.files})
        out = {}
        for i in range(25):
            state, stats = step(state, grad_fn, SamplerConfig("nuts", warmup=30))
            out[f"z{i}"] = state.z.numpy()
            out.update({f"{k}{i}": v.numpy() for k, v in stats.items()})
        np.savez(sys.argv[2], **out)
        """
    )
    out = tmp_path / "out.npz"
    cmd = [sys.executable, "-c", script, str(tmp_path / "state.npz"), str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=120)
    with np.load(out, allow_pickle=False) as f:
        for i, (z, s) in enumerate(zip(draws, stats, strict=True)):
            assert np.array_equal(f[f"z{i}"], z.numpy())
            assert all(np.array_equal(f[f"{k}{i}"], v.numpy()) for k, v in s.items())


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_chain_draws_do_not_depend_on_the_batch(method: str) -> None:
    """Exactly equal (torch.equal), not just close, for this elementwise target."""
    grad_fn = diagonal(MEAN[:4], SCALES[1:])
    config = SamplerConfig(method, warmup=40)
    z0 = torch.linspace(-1, 1, 12, dtype=F64).reshape(3, 4)
    alone = init_state(grad_fn, z0[:1], config, [101])
    batch = init_state(grad_fn, z0, config, [101, 102, 103])
    assert torch.equal(alone.step_size, batch.step_size[:1])
    alone_end, a_draws, a_stats = run(alone, grad_fn, config, 60)
    batch_end, b_draws, b_stats = run(batch, grad_fn, config, 60)
    assert_same(
        (a_draws, a_stats),
        ([z[:1] for z in b_draws], [{k: v[:1] for k, v in s.items()} for s in b_stats]),
    )
    picked = select_chains(batch_end, [0])
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            encode_state(alone_end).values(), encode_state(picked).values(), strict=True
        )
    )


def test_checkpoint_slots_cover_every_aligned_subtree() -> None:
    for depth in range(1, 11):
        slots: dict[int, int] = {}  # slot -> leaf that wrote it
        for n in range(2**depth):
            lo, hi = checkpoint_slots(n)
            if n % 2 == 0:
                assert lo == 0 and hi < depth
                slots[hi] = n
                continue
            trailing = (n ^ (n + 1)).bit_length() - 1
            starts = {n + 1 - 2**k for k in range(1, trailing + 1)}
            assert {slots[s] for s in range(lo, hi)} == starts
            assert hi <= depth


def test_warmup_schedule_and_adaptation_switches() -> None:
    assert warmup_schedule(1000) == (75, 950, (99, 149, 249, 449, 949))
    assert warmup_schedule(500) == (75, 450, (99, 149, 249, 449))
    assert warmup_schedule(100) == (15, 90, (89,))
    assert warmup_schedule(19) == (0, 0, ())
    grad_fn = diagonal(MEAN[:2], SCALES[3:])
    for warmup, adapt_step, adapt_mass in [(0, True, True), (30, False, False), (30, True, False)]:
        config = SamplerConfig(
            "nuts", warmup=warmup, adapt_step_size=adapt_step, adapt_mass=adapt_mass
        )
        start = init_state(grad_fn, torch.zeros(2, 2, dtype=F64), config, [5, 6])
        end, _, stats = run(start, grad_fn, config, 35)
        assert torch.equal(end.inv_mass, torch.ones(2, 2, dtype=F64))
        fixed = stacked(stats, "step_size")[warmup:] if adapt_step else stacked(stats, "step_size")
        assert (fixed == fixed[0]).all()
        assert torch.equal(fixed[0], start.step_size) == (warmup == 0 or not adapt_step)
        if warmup and adapt_step:  # Stan's final step size: exp(x-bar)
            assert torch.equal(end.step_size, end.da_log_step_bar.exp())


def test_bad_configs_and_starts() -> None:
    with pytest.raises(ValueError):
        SamplerConfig("mh", warmup=0)
    with pytest.raises(ValueError):
        SamplerConfig("hmc", warmup=0, num_steps=0)
    grad_fn = diagonal(MEAN[:2], SCALES[:2])
    config = SamplerConfig("nuts", warmup=0)
    with pytest.raises(ValueError, match="seeds"):
        init_state(grad_fn, torch.zeros(2, 2, dtype=F64), config, [1])
    with pytest.raises(ValueError, match="finite"):
        init_state(lambda z: (z.sum(-1) / 0.0, z), torch.ones(1, 2, dtype=F64), config, [1])
    with pytest.raises(ValueError, match="chains"):
        select_chains(init_state(grad_fn, torch.zeros(2, 2, dtype=F64), config, [1, 2]), [0, 0])


def cheap(z: Tensor) -> tuple[Tensor, Tensor]:
    return 0.5 * (z * z).sum(-1), z


def per_leapfrog_ms(c: int, method: str) -> tuple[float, float]:
    """(wall, CPU) ms per lockstep leapfrog step, the best of two runs of whole iterations
    (trees of 63 steps at most): the sampler's own cost, tree building and bookkeeping."""
    config = SamplerConfig(method, warmup=0, max_tree_depth=6, num_steps=50)
    state = init_state(cheap, torch.zeros(c, 10, dtype=F64), config, range(c))
    state = replace(state, step_size=torch.full((c,), 0.05, dtype=F64))
    wall = cpu = math.inf
    for _ in range(2):
        t, t_cpu, steps, s = time.perf_counter(), time.process_time(), 0, state
        for _ in range(8):
            s, stats = step(s, cheap, config)
            steps += int(stats["n_steps"].max())
        wall = min(wall, (time.perf_counter() - t) / steps)
        cpu = min(cpu, (time.process_time() - t_cpu) / steps)
    return 1e3 * wall, 1e3 * cpu


def test_overhead_per_leapfrog_step() -> None:
    """Printed, not asserted: the sampler's own cost per lockstep leapfrog step (D=10)."""
    for c in (1, 4):
        for method in ("nuts", "hmc"):
            wall, cpu = per_leapfrog_ms(c, method)
            print(f"{method} C={c} D=10: {wall:.3f} ms ({cpu:.3f} ms CPU) per leapfrog step")


def test_a_chain_stopped_by_a_failing_point_is_not_evaluated_there_again() -> None:
    """Beyond a wall the potential fails (as a compiled Cholesky of a matrix that is not
    positive definite does, for the whole batch). A chain that hits it stops its tree; the
    leaves its batch still builds must evaluate it at its last good position, not again at
    the failing one."""
    beyond = torch.zeros(2, dtype=torch.int64)  # evaluations past the wall, per chain

    def walled(z: Tensor) -> tuple[Tensor, Tensor]:
        wall = z[:, 0] >= 1.0
        beyond.add_(wall.to(torch.int64))
        pe = torch.where(wall, math.inf, 0.5 * (z * z).sum(-1))
        return pe, torch.where(wall[:, None], math.nan, z)

    config = SamplerConfig("nuts", warmup=0, max_tree_depth=8)
    # Chain 0 starts by the wall with a long step: it hits it at once. Chain 1, far from it
    # with a short step, builds deep trees meanwhile.
    state = init_state(walled, torch.tensor([[0.9, 0.0], [-3.0, 0.0]], dtype=F64), config, [5, 6])
    state = replace(state, step_size=torch.tensor([0.5, 0.01], dtype=F64))
    for _ in range(20):
        before = beyond.clone()
        state, stats = step(state, walled, config)
        assert int(stats["n_steps"][1]) > 30  # chain 1 kept building
        assert ((beyond - before) <= 1).all(), beyond - before  # one hit stops a tree
        assert (state.z[:, 0] < 1.0).all()
    assert int(beyond[0]) >= 5

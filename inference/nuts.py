"""Iterative NUTS and HMC in pure torch, C chains in lockstep, with a fully serialisable state."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import Tensor

from inference.nuts_adapt import adapt, draw_momentum, find_step_size, hamiltonian
from inference.nuts_leaf import (
    MAX_DELTA_H,
    LeafFn,
    checkpoint_count,
    checkpoint_slots,
    leaf_core,
    log_weight,
    slot_masks,
)
from inference.nuts_state import (
    ChainState,
    GradFn,
    decode_state,
    encode_state,
    generator_states,
    generators,
    select_chains,
)

__all__ = [
    "MAX_DELTA_H",
    "ChainState",
    "GradFn",
    "SamplerConfig",
    "checkpoint_count",
    "checkpoint_slots",
    "decode_state",
    "encode_state",
    "init_state",
    "select_chains",
    "step",
]

_F64 = torch.float64
_INF = math.inf


@dataclass(frozen=True)
class SamplerConfig:
    """What to run: "nuts" or "hmc"; adaptation happens during the first `warmup` iterations.

    `num_steps` (HMC only) fixes the leapfrog steps; None takes round(2 pi / step size), at
    least 1 and at most 2**max_tree_depth.
    """

    method: str
    warmup: int
    target_accept: float = 0.8
    max_tree_depth: int = 10
    num_steps: int | None = None
    adapt_step_size: bool = True
    adapt_mass: bool = True

    def __post_init__(self) -> None:
        if self.method not in ("nuts", "hmc"):
            raise ValueError(f"method must be 'nuts' or 'hmc', not {self.method!r}")
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")
        if not 0.0 < self.target_accept < 1.0:
            raise ValueError("target_accept must be in (0, 1)")
        if not 1 <= self.max_tree_depth <= 30:
            raise ValueError("max_tree_depth must be in [1, 30]")
        if self.num_steps is not None and self.num_steps < 1:
            raise ValueError("num_steps must be >= 1 (or None)")


def _uniforms(gens: Sequence[torch.Generator], draw: Sequence[bool], n: int) -> Tensor:
    """(C, n) uniforms, row i from chain i's generator; zeros (and no draw) where not `draw`."""
    skip = torch.zeros(n, dtype=_F64)
    rows = [torch.rand(n, generator=g, dtype=_F64) if draw[i] else skip for i, g in enumerate(gens)]
    return torch.stack(rows)


def _turning(rho: Tensor, p_a: Tensor, p_b: Tensor, inv_mass: Tensor) -> Tensor:
    """The generalised no-U-turn criterion fails: rho . M^-1 p <= 0 at either end."""
    return ((rho * (p_a * inv_mass)).sum(-1) <= 0) | ((rho * (p_b * inv_mass)).sum(-1) <= 0)


def _nuts(
    state: ChainState, grad_fn: GradFn, gens: Sequence[torch.Generator], max_depth: int,
    leaf: LeafFn | None = None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:  # fmt: skip
    """One multinomial NUTS transition (Betancourt 2017) for every chain, in lockstep.

    Each doubling, every active chain draws its direction, the subtree acceptance uniform and
    one uniform per leaf; the new subtree is built leaf by leaf from the tree's end in that
    direction, all chains' leapfrog steps in one grad_fn call. A subtree is sampled uniformly
    (progressively) within and biased-progressively against the old tree. U-turns of every
    aligned sub-subtree are checked at its last leaf from checkpoints of momentum and momentum
    prefix sums indexed by the leaf counter's bits; a U-turn or divergence rejects the subtree
    and stops that chain's tree, whose values are masked from then on. Per-chain scalars are
    kept as (C, 1) columns.
    """
    z0, g0, im = state.z, state.grad, state.inv_mass
    pe0, eps = state.pe[:, None], state.step_size[:, None]
    c, d = z0.shape
    r0 = draw_momentum(gens, im, [True] * c)
    h0 = hamiltonian(pe0, r0, im)
    lz, lr, lg = z0, r0, g0  # the tree's backward end
    rz, rr, rg = z0, r0, g0  # its forward end
    pz, ppe, pg = z0, pe0, g0  # its multinomial sample
    tree_lw = torch.zeros((c, 1), dtype=_F64)
    rsum = r0
    not_built = torch.full((c, 1), math.nan, dtype=_F64)  # a leaf's weight where not building
    min_lw = torch.tensor(-MAX_DELTA_H, dtype=_F64)
    zero = torch.zeros((), dtype=_F64)
    depth = torch.zeros((c, 1), dtype=torch.int64)
    n_steps = torch.zeros((c, 1), dtype=torch.int64)
    sum_accept = torch.zeros((c, 1), dtype=_F64)
    diverging = torch.zeros((c, 1), dtype=torch.bool)
    active = torch.ones((c, 1), dtype=torch.bool)
    active_list = [True] * c
    # Checkpoints (see checkpoint_slots): M^-1 p(n0) and the subtree's momentum sum before n0.
    slots = checkpoint_count(max_depth)
    ck_v = torch.zeros((slots, c, d), dtype=_F64)
    ck_base = torch.zeros_like(ck_v)
    plain = partial(leaf_core, grad_fn)
    core = leaf or plain
    no_weight = torch.full((c, 1), -_INF, dtype=_F64)
    for level in range(max_depth):
        u = _uniforms(gens, active_list, (1 << level) + 2)
        forward = u[:, :1] < 0.5
        log_accept_u = u[:, 1:2].log()
        log_u = u[:, 2:].log().T.contiguous().unsqueeze(-1).unbind(0)  # leaf n: (C, 1)
        step = torch.where(forward, eps, -eps)
        half = 0.5 * step
        step_im = step * im
        ez, er, eg = (
            torch.where(forward, rz, lz),
            torch.where(forward, rr, lr),
            torch.where(forward, rg, lg),
        )
        sz, spe, sg = ez, pe0, eg  # the subtree's sample (every building chain takes leaf 0)
        sub_lw = no_weight
        sub_sum = torch.zeros((c, d), dtype=_F64)
        # Leaf n's log weight per chain (NaN where it did not build, -inf for an infinite
        # energy); reduced once per doubling, over the leaves built, so that a chain's stats
        # do not depend on how long the other chains of its batch kept building.
        leaf_lw: list[Tensor] = []
        b = active
        # Values of chains that are not building are never used again in this iteration.
        kick = half * eg  # the half-step momentum change at the edge
        for n in range(1 << level):
            store, check = slot_masks(slots, n)
            args = (ez, er, kick, step_im, half, im, h0, b, sz, spe, sg, sub_lw, log_u[n],
                    not_built, sub_sum, ck_base, ck_v, store, check)  # fmt: skip
            try:
                out = core(*args)
            except Exception:  # a compiled leaf failing (an extreme point): the plain step
                out = plain(*args)
            ez, er, eg, _, _, lw, _, sub_lw, sz, spe, sg, kick, sub_sum, ck_base, ck_v, b = out
            leaf_lw.append(lw)
            if not bool(b.any()):
                break
        leaves = torch.stack(leaf_lw, 1)  # (C, leaves built, 1)
        built = ~leaves.isnan()
        n_steps += built.sum(1)
        sum_accept += torch.where(built, leaves.clamp(max=0.0).exp(), zero).sum(1)
        diverging |= (leaves < min_lw).any(1)
        valid = b
        take = valid & (log_accept_u < sub_lw - tree_lw)
        pz, ppe, pg = (
            torch.where(take, sz, pz),
            torch.where(take, spe, ppe),
            torch.where(take, sg, pg),
        )
        tree_lw = torch.where(valid, torch.logaddexp(tree_lw, sub_lw), tree_lw)
        vf, vb = valid & forward, valid & ~forward
        rz, rr, rg = torch.where(vf, ez, rz), torch.where(vf, er, rr), torch.where(vf, eg, rg)
        lz, lr, lg = torch.where(vb, ez, lz), torch.where(vb, er, lr), torch.where(vb, eg, lg)
        rsum = torch.where(valid, rsum + sub_sum, rsum)
        depth += valid
        active = valid & ~_turning(rsum, lr, rr, im)[:, None]
        if not bool(active.any()):
            break
        active_list = active[:, 0].tolist()
    stats = {
        "diverging": diverging[:, 0],
        "accept_prob": (sum_accept / n_steps)[:, 0],
        "energy": h0[:, 0],
        "tree_depth": depth[:, 0],
        "n_steps": n_steps[:, 0],
    }
    return pz, ppe[:, 0], pg, stats


def _hmc(
    state: ChainState, grad_fn: GradFn, gens: Sequence[torch.Generator], config: SamplerConfig
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """One HMC transition per chain: a fixed number of leapfrog steps and a Metropolis test.

    A chain whose trajectory diverges stops there and rejects; chains with fewer steps than
    the longest wait masked.
    """
    z0, g0, im = state.z, state.grad, state.inv_mass
    pe0, eps = state.pe[:, None], state.step_size[:, None]
    c = z0.shape[0]
    if config.num_steps is not None:
        n_leap = torch.full((c, 1), config.num_steps, dtype=torch.int64)
    else:
        cap = float(1 << config.max_tree_depth)
        n_leap = (2.0 * math.pi / eps).round().clamp(1.0, cap).to(torch.int64)
    longest = int(n_leap.max())
    # leaf n: the chains whose trajectory has a step n, (C, 1)
    has_step = (n_leap > torch.arange(longest)).T.unsqueeze(-1).unbind(0)
    r0 = draw_momentum(gens, im, [True] * c)
    log_u = _uniforms(gens, [True] * c, 1).log()
    h0 = hamiltonian(pe0, r0, im)
    half = 0.5 * eps
    step_im = eps * im
    min_lw = torch.tensor(-MAX_DELTA_H, dtype=_F64)
    z, r, pe, g = z0, r0, pe0, g0
    diverging = torch.zeros((c, 1), dtype=torch.bool)
    n_steps = torch.zeros((c, 1), dtype=torch.int64)
    for n in range(longest):
        b = has_step[n] & ~diverging
        if not bool(b.any()):
            break
        r_half = r - half * g
        zn = torch.where(b, z + step_im * r_half, z)
        pen, gn = grad_fn(zn)
        pen = pen.unsqueeze(1)
        rn = r_half - half * gn
        ok = b & (log_weight(h0, hamiltonian(pen, rn, im)) >= min_lw)
        diverging |= b ^ ok
        n_steps += b
        z, r, pe, g = (
            torch.where(ok, zn, z),
            torch.where(ok, rn, r),
            torch.where(ok, pen, pe),
            torch.where(ok, gn, g),
        )
    lw_end = torch.where(diverging, -_INF, log_weight(h0, hamiltonian(pe, r, im)))
    accept = log_u < lw_end
    stats = {
        "diverging": diverging[:, 0],
        "accept_prob": lw_end.clamp(max=0.0).exp()[:, 0],
        "energy": h0[:, 0],
        "tree_depth": torch.zeros(c, dtype=torch.int64),
        "n_steps": n_steps[:, 0],
    }
    z, pe, g = torch.where(accept, z, z0), torch.where(accept, pe, pe0), torch.where(accept, g, g0)
    return z, pe[:, 0], g, stats


def _evaluate(grad_fn: GradFn, z: Tensor) -> tuple[Tensor, Tensor]:
    pe, grad = grad_fn(z)
    c, d = z.shape
    if not isinstance(pe, Tensor) or pe.shape != (c,) or pe.dtype != _F64:
        raise ValueError(f"grad_fn must return a float64 potential of shape ({c},)")
    if not isinstance(grad, Tensor) or grad.shape != (c, d) or grad.dtype != _F64:
        raise ValueError(f"grad_fn must return a float64 gradient of shape ({c}, {d})")
    if not (bool(torch.isfinite(pe).all()) and bool(torch.isfinite(grad).all())):
        raise ValueError("the potential or its gradient is not finite at the initial position")
    return pe.detach().clone(), grad.detach().clone()


def init_state(
    grad_fn: GradFn, z0: Tensor, config: SamplerConfig, seeds: Sequence[int]
) -> ChainState:
    """C chains at positions z0 (C, D), chain i with a CPU generator seeded with seeds[i].

    Evaluates grad_fn at z0 (ValueError unless finite), starts from the identity mass matrix
    and searches each chain's initial step size from 1; dual averaging starts around it.
    """
    z = torch.as_tensor(z0).detach().to(device="cpu", dtype=_F64).clone().contiguous()
    if z.ndim != 2 or z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"z0 must be (chains, dimensions), not {tuple(z.shape)}")
    c, d = z.shape
    if len(seeds) != c:
        raise ValueError(f"{len(seeds)} seeds for {c} chains")
    pe, grad = _evaluate(grad_fn, z)
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    inv_mass = torch.ones((c, d), dtype=_F64)
    eps = find_step_size(grad_fn, z, pe, grad, inv_mass, torch.ones(c, dtype=_F64), gens)
    return ChainState(
        iteration=0,
        z=z,
        pe=pe,
        grad=grad,
        step_size=eps,
        inv_mass=inv_mass,
        da_mu=(10.0 * eps).log(),
        da_log_step_bar=torch.zeros(c, dtype=_F64),
        da_h_bar=torch.zeros(c, dtype=_F64),
        da_count=0,
        welford_count=0,
        welford_mean=torch.zeros((c, d), dtype=_F64),
        welford_m2=torch.zeros((c, d), dtype=_F64),
        mass_window=0,
        rng=generator_states(gens),
    )


def step(
    state: ChainState, grad_fn: GradFn, config: SamplerConfig, leaf: LeafFn | None = None
) -> tuple[ChainState, dict[str, Tensor]]:
    """One NUTS (or HMC) iteration for all chains; `state` is left unchanged.

    Adapts while state.iteration < config.warmup (the last warmup iteration fixes the step
    size to exp(log_step_bar)). Stats, each (C,): diverging, step_size (used), accept_prob,
    energy (H at the start), tree_depth (valid doublings; HMC 0), n_steps (leapfrog steps)
    and lp (minus the new potential energy).
    """
    gens = generators(state)
    if config.method == "nuts":
        z, pe, grad, stats = _nuts(state, grad_fn, gens, config.max_tree_depth, leaf)
    else:
        z, pe, grad, stats = _hmc(state, grad_fn, gens, config)
    stats["step_size"] = state.step_size.clone()
    stats["lp"] = -pe
    new = replace(state, z=z, pe=pe, grad=grad)
    if state.iteration < config.warmup:
        new = adapt(
            new,
            stats["accept_prob"],
            gens,
            grad_fn,
            config.warmup,
            config.target_accept,
            config.adapt_step_size,
            config.adapt_mass,
        )
    return replace(new, iteration=state.iteration + 1, rng=generator_states(gens)), stats

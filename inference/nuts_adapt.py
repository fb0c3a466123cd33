"""Warmup adaptation for NUTS/HMC: dual averaging, windowed diagonal metric, step-size search."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from inference.nuts_state import ChainState, GradFn

# Dual averaging (Hoffman & Gelman 2014, Stan's defaults).
GAMMA = 0.05
T0 = 10.0
KAPPA = 0.75
# Stan's warmup buffers: initial fast interval, first slow window, terminal fast interval.
INIT_BUFFER = 75
BASE_WINDOW = 25
TERM_BUFFER = 50
MIN_ADAPT_WARMUP = 20  # Stan estimates no metric for shorter warmups
# The initial step-size search: double or halve until one leapfrog step's acceptance
# probability crosses this, at most MAX_TRIES times, never above MAX_STEP_SIZE.
SEARCH_ACCEPT = 0.5
MAX_TRIES = 100
MAX_STEP_SIZE = 1e7


def hamiltonian(pe: Tensor, r: Tensor, inv_mass: Tensor) -> Tensor:
    """pe + 0.5 * sum(r * M^-1 r) per chain, shaped like pe ((C,) or (C, 1)); M^-1 diagonal."""
    return torch.add(pe, (r * (r * inv_mass)).sum(-1, keepdim=pe.ndim == 2), alpha=0.5)


def draw_momentum(
    gens: Sequence[torch.Generator], inv_mass: Tensor, draw: Sequence[bool]
) -> Tensor:
    """r ~ N(0, M) per chain from that chain's generator; zeros (and no draw) where not `draw`."""
    d = inv_mass.shape[1]
    skip = torch.zeros(d, dtype=torch.float64)
    rows = [
        torch.randn(d, generator=g, dtype=torch.float64) if draw[i] else skip
        for i, g in enumerate(gens)
    ]
    return torch.stack(rows) / inv_mass.sqrt()


def warmup_schedule(warmup: int) -> tuple[int, int, tuple[int, ...]]:
    """Stan's windowed adaptation for `warmup` iterations: (first, stop, ends).

    Iterations i with first <= i < stop add their draw to the variance estimate; at the end
    of iteration i in `ends` a slow window closes (the metric is updated). No windows for
    warmups under 20; buffers scaled to 15% / 75% / 10% when 75 + 25 + 50 do not fit.
    """
    if warmup < MIN_ADAPT_WARMUP:
        return 0, 0, ()
    init, window, term = INIT_BUFFER, BASE_WINDOW, TERM_BUFFER
    if init + window + term > warmup:
        init = int(0.15 * warmup)
        term = int(0.1 * warmup)
        window = warmup - (init + term)
    last = warmup - term - 1
    ends = [init + window - 1]
    while ends[-1] != last:
        window *= 2
        nxt = ends[-1] + window
        if nxt + 2 * window >= warmup - term:
            nxt = last
        ends.append(nxt)
    return init, warmup - term, tuple(ends)


def regularised_inv_mass(count: int, m2: Tensor) -> Tensor:
    """Stan's shrunk variance estimate: (n / (n + 5)) var + 1e-3 (5 / (n + 5))."""
    n = float(count)
    var = m2 / max(n - 1.0, 1.0)
    return (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))


def leapfrog(
    z: Tensor, r: Tensor, grad: Tensor, step: Tensor, inv_mass: Tensor, grad_fn: GradFn
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One leapfrog step of signed size `step` (C, 1) for all chains: (z, r, pe, grad)."""
    half = 0.5 * step
    r_half = r - half * grad
    z_new = z + step * inv_mass * r_half
    pe_new, grad_new = grad_fn(z_new)
    return z_new, r_half - half * grad_new, pe_new, grad_new


def find_step_size(
    grad_fn: GradFn,
    z: Tensor,
    pe: Tensor,
    grad: Tensor,
    inv_mass: Tensor,
    step_size: Tensor,
    gens: Sequence[torch.Generator],
) -> Tensor:
    """Per chain: from `step_size`, double (or halve) until the acceptance probability of one
    leapfrog step from `z` with fresh momentum falls below (rises above) SEARCH_ACCEPT.

    A non-finite energy counts as rejection. Chains search in lockstep, one grad_fn call per
    try for all of them; a chain draws momentum only while it searches.
    """
    c = z.shape[0]
    eps = step_size.clone()
    log_target = math.log(SEARCH_ACCEPT)
    searching = [True] * c
    grow = torch.ones(c, dtype=torch.bool)
    for attempt in range(MAX_TRIES):
        r = draw_momentum(gens, inv_mass, searching)
        h0 = hamiltonian(pe, r, inv_mass)
        _, r1, pe1, _ = leapfrog(z, r, grad, eps[:, None], inv_mass, grad_fn)
        log_accept = torch.nan_to_num(
            h0 - hamiltonian(pe1, r1, inv_mass), nan=-math.inf, posinf=-math.inf, neginf=-math.inf
        )
        good = log_accept > log_target
        if attempt == 0:
            grow = good
        more = torch.tensor(searching) & (good == grow)
        more &= ~(grow & (eps >= MAX_STEP_SIZE))
        eps = torch.where(more, torch.where(grow, 2.0 * eps, 0.5 * eps), eps)
        searching = more.tolist()
        if not any(searching):
            break
    return eps.clamp(max=MAX_STEP_SIZE)


def dual_averaging(state: ChainState, accept_prob: Tensor, target_accept: float) -> ChainState:
    """One step of Nesterov dual averaging on log step size (Stan's learn_stepsize)."""
    t = state.da_count + 1
    eta = 1.0 / (t + T0)
    h_bar = (1.0 - eta) * state.da_h_bar + eta * (target_accept - accept_prob.clamp(max=1.0))
    log_step = state.da_mu - h_bar * (math.sqrt(t) / GAMMA)
    weight = t**-KAPPA
    log_step_bar = weight * log_step + (1.0 - weight) * state.da_log_step_bar
    return replace(
        state,
        step_size=log_step.exp(),
        da_h_bar=h_bar,
        da_log_step_bar=log_step_bar,
        da_count=t,
    )


def restart_dual_averaging(state: ChainState) -> ChainState:
    """Restart dual averaging around the current step size: mu = log(10 * step_size)."""
    zeros = torch.zeros_like(state.step_size)
    return replace(
        state,
        da_mu=(10.0 * state.step_size).log(),
        da_log_step_bar=zeros,
        da_h_bar=zeros.clone(),
        da_count=0,
    )


def adapt(
    state: ChainState,
    accept_prob: Tensor,
    gens: Sequence[torch.Generator],
    grad_fn: GradFn,
    warmup: int,
    target_accept: float,
    adapt_step_size: bool,
    adapt_mass: bool,
) -> ChainState:
    """Adapt after warmup iteration `state.iteration` (not yet incremented), whose draw is
    `state.z` and mean acceptance probability `accept_prob`; `gens` are the chains'
    generators (they advance when a slow window closes and the step size is searched again).
    """
    i = state.iteration
    if i >= warmup:
        return state
    if adapt_step_size:
        state = dual_averaging(state, accept_prob, target_accept)
    first, stop, ends = warmup_schedule(warmup)
    if adapt_mass and first <= i < stop:
        n = state.welford_count + 1
        delta = state.z - state.welford_mean
        mean = state.welford_mean + delta / n
        m2 = state.welford_m2 + delta * (state.z - mean)
        state = replace(state, welford_count=n, welford_mean=mean, welford_m2=m2)
        if state.mass_window < len(ends) and i == ends[state.mass_window]:
            inv_mass = regularised_inv_mass(n, m2)
            zeros = torch.zeros_like(m2)
            state = replace(
                state,
                inv_mass=inv_mass,
                welford_count=0,
                welford_mean=zeros,
                welford_m2=zeros.clone(),
                mass_window=state.mass_window + 1,
            )
            if adapt_step_size:
                eps = find_step_size(
                    grad_fn, state.z, state.pe, state.grad, inv_mass, state.step_size, gens
                )
                state = restart_dual_averaging(replace(state, step_size=eps))
    if adapt_step_size and i == warmup - 1:
        state = replace(state, step_size=state.da_log_step_bar.exp())
    return state

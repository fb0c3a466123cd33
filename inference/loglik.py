"""pointwise_log_likelihood(): log p(y_i | draw) of every observed site of a user's model, per
posterior draw and data point, as az.loo and az.waic need it; and the plate dims of its sites.

Runs where the model runs (in the sandbox). One vectorised pass (Pyro's Predictive with
parallel=True: an outer plate over the draws) where the model broadcasts, checked against a
plain run of the first draw; otherwise one model run per draw. Bounded: at most MAX_DRAWS
draws (thinned evenly within each chain) and MAX_FLOATS values in all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pyro import poutine
from pyro.infer import Predictive
from pyro.poutine.util import site_is_subsample

log = logging.getLogger(__name__)

MAX_DRAWS = 1000  # draws the log-likelihood is computed for (PSIS-LOO needs a few hundred)
MAX_FLOATS = 10_000_000  # draws x data points, over every observed site (80 MB as float64)
MIN_DRAWS = 20  # fewer than this and LOO means nothing: skip, with a note
CHUNK_FLOATS = 2_000_000  # values per vectorised pass, so a big model's pass stays small
MAX_DIM_NAME = 255


@dataclass(frozen=True, slots=True)
class LogLik:
    """Per observed site: log-likelihood (draws, *data shape) float64, the observed values;
    the positions of the draws used (in the chain-major draws given); plate dim names by
    site (None where no plate names an axis); how it ran, or why there is none."""

    values: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    observed: dict[str, NDArray[Any]] = field(default_factory=dict)
    draws: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dims: dict[str, list[str | None]] = field(default_factory=dict)
    vectorized: bool = False
    note: str = ""


def site_dims(trace: Any) -> dict[str, list[str | None]]:
    """{site: a name per axis of its value}: the plate whose dim it is, else None (event axes,
    and batch axes no plate declares)."""
    out: dict[str, list[str | None]] = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        value = site["value"]
        if not isinstance(value, torch.Tensor):
            continue
        # A pyro.deterministic site is a Delta whose event is its whole value: its plates
        # still name its axes from the right.
        deterministic = (site["infer"] or {}).get("_deterministic")
        event = 0 if deterministic else len(getattr(site["fn"], "event_shape", ()))
        batch = value.dim() - event
        dims: list[str | None] = [None] * value.dim()
        for frame in site["cond_indep_stack"]:
            if frame.dim is None or not frame.vectorized:
                continue
            axis = batch + frame.dim
            if 0 <= axis < batch and value.shape[axis] == frame.size:
                dims[axis] = str(frame.name)[:MAX_DIM_NAME]
        out[name] = dims
    return out


def chosen_draws(
    total: int, chains: int, points: int, job_chains: int | None = None
) -> NDArray[np.int64]:
    """Positions of the draws to use, evenly spaced within each chain (chain-major), so that
    at most MAX_DRAWS draws and MAX_FLOATS values are computed. Empty when fewer than
    MIN_DRAWS would remain. `job_chains`: the job's chains, when these are a unit's part of
    them (each unit then keeps what its chains' share of the job would)."""
    per_chain = total // max(chains, 1)
    every = max(job_chains or chains, chains)
    keep = min(per_chain, MAX_DRAWS // every, MAX_FLOATS // max(points * every, 1))
    if keep * every < MIN_DRAWS:
        return np.zeros(0, dtype=np.int64)
    within = np.unique(np.linspace(0, per_chain - 1, keep).round().astype(np.int64))
    return np.concatenate([c * per_chain + within for c in range(chains)])


def pointwise_log_likelihood(
    model: Callable[..., Any],
    data: Mapping[str, Any],
    latents: Mapping[str, NDArray[Any]],
    *,
    chains: int = 1,
    device: str = "cpu",
    job_chains: int | None = None,
) -> LogLik:
    """Log-likelihood of each observed site per draw of `latents` (site -> (draws, *shape),
    chain-major over `chains`) and per data point. Never raises for the model's sake: a model
    it cannot run this way gives a LogLik with no values and a note saying why."""
    try:
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(model).get_trace(**data)
    except Exception as e:  # the fit ran this model; still, a log-likelihood is not worth a job
        return LogLik(note=f"log-likelihood not computed: the model raised {type(e).__name__}")
    dims = site_dims(trace)
    observed = _observed_sites(trace)
    if not observed:
        return LogLik(dims=dims, note="log-likelihood not computed: the model observes no site")
    shapes = {s: tuple(_log_prob(trace.nodes[s]).shape) for s in observed}
    points = sum(int(np.prod(v, dtype=np.int64)) for v in shapes.values())
    total = len(next(iter(latents.values()))) if latents else 0
    rows = chosen_draws(total, chains, points, job_chains)
    if len(rows) == 0:
        return LogLik(dims=dims, note=(
            f"log-likelihood not computed: {total} draws of {points} data points is too few"
            f" draws or over the cap of {MAX_FLOATS} values"
        ))  # fmt: skip
    given = {
        s: torch.as_tensor(np.asarray(v)[rows], device=device)
        for s, v in latents.items()
        if s in trace.nodes and s not in observed
    }
    values = {s: _numpy(trace.nodes[s]["value"]) for s in observed}
    try:
        one = _one_by_one(model, data, {s: v[:1] for s, v in given.items()}, observed)
        pointwise = _vectorized(model, data, given, observed, shapes, len(rows))
        vectorized = pointwise is not None and all(
            np.allclose(pointwise[s][:1], one[s], rtol=1e-5, atol=1e-6) for s in observed
        )
        if not vectorized:
            log.info("log-likelihood: the model is not batch-safe; one run per draw")
            pointwise = _one_by_one(model, data, given, observed)
    except Exception as e:
        return LogLik(dims=dims, note=f"log-likelihood not computed: {type(e).__name__}: {e}"[:500])
    assert pointwise is not None
    bad = [s for s, v in pointwise.items() if np.isnan(v).any() or np.isposinf(v).any()]
    if bad:
        return LogLik(dims=dims, note=f"log-likelihood not computed: NaN at site `{bad[0]}`")
    return LogLik(pointwise, values, rows, dims, vectorized)


def _numpy(value: Any) -> NDArray[Any]:
    return np.asarray(torch.as_tensor(value).detach().cpu())


def _observed_sites(trace: Any) -> list[str]:
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and site["is_observed"]
        and not site_is_subsample(site)
        and not (site["infer"] or {}).get("_deterministic")
    ]


def _log_prob(site: Mapping[str, Any]) -> torch.Tensor:
    """The site's log density per batch element (its event axes summed)."""
    lp: torch.Tensor = site["fn"].log_prob(site["value"])
    mask = site.get("mask")
    if isinstance(mask, torch.Tensor):  # a masked-out data point counts for nothing
        lp = lp.masked_fill(~mask.expand(lp.shape), 0.0)
    return lp


def _vectorized(
    model: Callable[..., Any],
    data: Mapping[str, Any],
    given: Mapping[str, torch.Tensor],
    observed: list[str],
    shapes: Mapping[str, tuple[int, ...]],
    num_draws: int,
) -> dict[str, NDArray[np.float64]] | None:
    points = sum(int(np.prod(v, dtype=np.int64)) for v in shapes.values())
    chunk = max(1, CHUNK_FLOATS // max(points, 1))
    parts: dict[str, list[NDArray[np.float64]]] = {s: [] for s in observed}
    try:
        for start in range(0, num_draws, chunk):
            part = {s: v[start : start + chunk] for s, v in given.items()}
            size = len(next(iter(part.values()))) if part else min(chunk, num_draws - start)
            predictive = Predictive(model, posterior_samples=part, parallel=True)
            with torch.no_grad():
                trace = predictive.get_vectorized_trace(**data)
            for s in observed:
                lp = _log_prob(trace.nodes[s])
                want = size * int(np.prod(shapes[s], dtype=np.int64))
                if lp.numel() != want or lp.shape[0] != size:  # the draws plate did not land
                    return None
                parts[s].append(lp.reshape(size, *shapes[s]).double().cpu().numpy())
    except Exception as e:  # a model whose shapes do not broadcast over a draws plate
        log.info("log-likelihood: vectorised pass failed (%s)", type(e).__name__)
        return None
    return {s: np.concatenate(v) for s, v in parts.items()}


def _one_by_one(
    model: Callable[..., Any],
    data: Mapping[str, Any],
    given: Mapping[str, torch.Tensor],
    observed: list[str],
) -> dict[str, NDArray[np.float64]]:
    count = len(next(iter(given.values()))) if given else 1
    out: dict[str, list[NDArray[np.float64]]] = {s: [] for s in observed}
    with torch.no_grad():
        for i in range(count):
            conditioned = poutine.condition(model, data={s: v[i] for s, v in given.items()})
            trace = poutine.trace(conditioned).get_trace(**data)
            for s in observed:
                out[s].append(_log_prob(trace.nodes[s]).double().cpu().numpy())
    return {s: np.stack(v) for s, v in out.items()}

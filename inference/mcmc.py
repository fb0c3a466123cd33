"""run_mcmc(): NUTS/HMC chains of a user's model file, in child processes or a thread, relayed
from Pyro's hook_fn as a generator of events."""

from __future__ import annotations

import multiprocessing
from collections.abc import Generator
from typing import Any

import numpy as np
import pyro.poutine as poutine
import torch

from inference.events import Event, McmcFinished, McmcStarted
from inference.mcmc_chain import _ChainResult, _ChainSpec, _load, chain_seed
from inference.mcmc_kernels import HMC_STATS, STATS
from inference.mcmc_runners import _Processes, _relay, _Thread
from inference.usercode import describe_exception
from kiln.errors import ModelError, SpecError

__all__ = ["HMC_STATS", "METHODS", "STATS", "chain_seed", "run_mcmc"]

METHODS = ("nuts", "hmc")


def _check_args(method: str, warmup: int, samples: int, chains: int, seed: int) -> None:
    if method not in METHODS:
        raise SpecError(f"unknown MCMC method `{method}` (have: {', '.join(METHODS)})", "method")
    for name, value, least in (("warmup", warmup, 0), ("samples", samples, 1),
                               ("chains", chains, 1), ("seed", seed, 0)):  # fmt: skip
        if value < least:
            raise SpecError(f"{name} must be >= {least} (got {value})", field=name)


def _check_model(spec: _ChainSpec) -> None:
    """Load and run the model once here, so a broken file or data fails before any chain."""
    model, tensors = _load(spec)
    try:
        with torch.no_grad():
            trace = poutine.trace(model).get_trace(**tensors)
    except Exception as e:
        raise ModelError(f"the model raised {describe_exception(e, spec.filename)}") from e
    if not any(
        s["type"] == "sample" and not s["is_observed"] for s in trace.nodes.values()
    ):  # fmt: skip
        raise ModelError(
            f"`{spec.function}` in {spec.filename} has no latent sample site (every pyro.sample"
            " is observed or deterministic), so there is nothing for MCMC to draw"
        )


def _finish(results: dict[int, _ChainResult], chains: int) -> McmcFinished:
    ordered = [results[c] for c in range(chains)]
    first = ordered[0]
    draws = {site: np.stack([r.draws[site] for r in ordered]) for site in first.draws}
    stats = {name: np.stack([r.stats[name] for r in ordered]) for name in first.stats}
    warmup = {site: np.stack([r.warmup_draws[site] for r in ordered])
              for site in first.warmup_draws}  # fmt: skip
    notes = {r.note for r in ordered if r.note}
    if len(notes) == 1 and all(r.note for r in ordered):
        note = notes.pop()
    else:
        note = "; ".join(f"chain {c}: {r.note}" for c, r in enumerate(ordered) if r.note)
    return McmcFinished(
        draws=draws, stats=stats, chain_seconds=tuple(r.seconds for r in ordered),
        jit=all(r.jit for r in ordered), note=note, deterministic=first.deterministic,
        warmup_draws=warmup,
    )  # fmt: skip


def run_mcmc(
    source: str,
    filename: str,
    function: str,
    data: dict[str, Any],
    *,
    method: str,
    warmup: int,
    samples: int,
    chains: int,
    seed: int,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    num_steps: int | None = None,
    jit: bool = True,
    device: str = "cpu",
    processes: bool | None = None,
    progress_every_s: float = 0.5,
    keep_warmup: bool = False,
) -> Generator[Event, None, None]:
    """Run `chains` NUTS or HMC chains of `function` in the user's file `source`, on `data`
    (JSON-style, see usercode.to_tensors), yielding McmcStarted, ChainProgress... and
    McmcFinished.

    Chains run in parallel in spawned child processes unless `processes` is False or this
    process is daemonic (a Celery prefork child), then one after another in a thread. Each
    chain reseeds from `seed` and its index, so the same seed gives the same draws. With
    `jit`, a chain whose model cannot be traced reruns without jit_compile (McmcFinished
    says so). `num_steps` fixes HMC's leapfrog steps (None: a trajectory length of 2 pi).
    With `keep_warmup`, McmcFinished carries the warmup draws too (`warmup_draws`).
    Closing the generator stops every chain. Raises ModelError (the user's line) when the
    model raises, DataError for unusable data, SpecError for bad arguments.
    """
    _check_args(method, warmup, samples, chains, seed)
    spec = _ChainSpec(
        source=source, filename=filename, function=function, data=dict(data), method=method,
        warmup=warmup, samples=samples, seed=seed, target_accept=target_accept,
        max_tree_depth=max_tree_depth, num_steps=num_steps, jit=jit, device=device,
        progress_every_s=progress_every_s, keep_warmup=keep_warmup,
    )  # fmt: skip
    _check_model(spec)
    daemonic = multiprocessing.current_process().daemon  # daemons may not have children
    runner: _Processes | _Thread
    if processes is not False and not daemonic:
        runner = _Processes(spec, chains)
    else:
        runner = _Thread(spec, chains)
    results: dict[int, _ChainResult] = {}
    try:
        yield McmcStarted(method, device, chains, warmup, samples, jit, runner.parallel)
        runner.start()
        yield from _relay(runner, chains, warmup + samples, progress_every_s, results)
    finally:
        runner.stop(set(results))
    yield _finish(results, chains)

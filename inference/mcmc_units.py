"""One unit of work of an MCMC job: some of its chains, sampled together by Kiln's NUTS/HMC
(inference.nuts) over the model's compiled potential, checkpointed mid-chain and resumed from
those bytes; --until's convergence checks; Pyro's kernels for a model with a discrete latent."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from inference.checkpoint import peek
from inference.events import ChainProgress, Checkpoint, Event, McmcFinished, McmcStarted, Metric
from inference.loglik import LogLik, pointwise_log_likelihood
from inference.mcmc_chain import _ChainSpec, _replay, _run_chain, _to_numpy, chain_seed
from inference.mcmc_kernels import HMC_STATS, STATS
from inference.mcmc_until import Replayed, until_check
from inference.nuts import SamplerConfig, checkpoint_count, init_state, step
from inference.nuts_state import ChainState, decode_state, encode_state
from inference.potential import Potential, Unsupported
from inference.statecodec import StateFormatError, decode, encode
from inference.usercode import describe_exception, get_function, load_module, to_tensors
from inference.userfit import user_model
from kiln.errors import KilnError, ModelError

log = logging.getLogger(__name__)

UNIT_FORMAT = "kiln-mcmc-unit/npz-json/v2"
# inductor=None (auto): after AUTO_PROBE iterations of the torch.jit step, a unit whose trees
# project at least AUTO_LEAVES more lockstep leapfrog steps compiles its step with inductor
# (seconds once, then a fraction of the time per step: docs/benchmarks.md). The projection
# counts steps, not seconds, so a resumed unit decides as the uninterrupted one did.
AUTO_PROBE = 50
AUTO_LEAVES = 200_000
_STAT_DTYPES = {"diverging": np.bool_, "tree_depth": np.int64}


@dataclass(frozen=True, slots=True)
class UnitRun:
    """A unit's chains (their indices in the job) and the job's MCMC settings."""

    source: str
    filename: str
    function: str
    data: Mapping[str, Any]
    chains: tuple[int, ...]
    job_chains: int
    method: str
    warmup: int
    samples: int  # draws per chain (with `until`: the cap)
    seed: int
    target_accept: float = 0.8
    max_tree_depth: int = 10
    num_steps: int | None = None
    jit: bool = True
    inductor: bool | None = False  # None: decided after AUTO_PROBE iterations
    device: str = "cpu"
    keep_warmup: bool = False
    until: Mapping[str, float] | None = None
    check_every: int = 250
    checkpoint_every_draws: int = 200
    checkpoint_every_s: float = 30.0
    progress_every_s: float = 0.5
    resume: bytes | None = None


@dataclass(slots=True)
class UnitOutcome:
    """The log-likelihood of the unit's draws and the facts its record keeps."""

    loglik: LogLik
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Progress:
    """The draws so far: unconstrained positions, warmup positions, per-draw stats."""

    kept: list[torch.Tensor]  # each (C, D), one per kept draw
    warmup: list[torch.Tensor]
    stats: dict[str, list[torch.Tensor]]
    checks: list[dict[str, Any]]
    resumed_at: list[int]
    leaves: int = 0  # lockstep leapfrog steps so far (the most of any chain, per iteration)
    inductor_from: int | None = None  # the iteration from which the step ran compiled by inductor
    # --until: the deterministic sites' values of the draws checked so far, by chain.
    replayed: Replayed = field(default_factory=list)


def run_unit(run: UnitRun) -> Generator[Event, None, UnitOutcome]:
    """McmcStarted, ChainProgress... and Checkpoint... events, then McmcFinished with the
    unit's draws (chains, draws, *shape); returns the log-likelihood and the facts.

    The unit samples in float64, on one CPU thread: its tensors are a few chains' positions,
    too small for threads to pay (measured: docs/benchmarks.md), and a host's cores are used
    by units side by side (`kiln worker --concurrency`). The process's default dtype and
    threads are put back when it ends, so a worker's (or a test's) next job runs as it would
    have."""
    previous, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    if run.device == "cpu":
        torch.set_num_threads(1)
    try:
        return (yield from _unit(run))
    finally:
        torch.set_default_dtype(previous)
        torch.set_num_threads(threads)


def _unit(run: UnitRun) -> Generator[Event, None, UnitOutcome]:
    module = load_module(run.source, run.filename)
    model = user_model(get_function(module, run.function, run.filename), run.filename)
    tensors = to_tensors(run.data, run.device, getattr(module, "DTYPES", None))
    try:
        potential = Potential(model, tensors, len(run.chains), compile=run.jit,
                              filename=run.filename)  # fmt: skip
    except Unsupported as e:
        return (yield from _pyro_unit(run, str(e)))
    except KilnError:
        raise
    except Exception as e:
        raise ModelError(f"the model raised {describe_exception(e, run.filename)}") from e
    return (yield from _kiln_unit(run, model, tensors, potential))


def _kiln_unit(
    run: UnitRun, model: Callable[..., Any], tensors: dict[str, Any], potential: Potential
) -> Generator[Event, None, UnitOutcome]:
    config = SamplerConfig(method=run.method, warmup=run.warmup, target_accept=run.target_accept,
                           max_tree_depth=run.max_tree_depth, num_steps=run.num_steps)  # fmt: skip
    names = STATS if run.method == "nuts" else HMC_STATS
    started = time.perf_counter()
    state, progress = _start(run, potential, config, names)
    slots = checkpoint_count(config.max_tree_depth)
    leaf = None
    if run.method == "nuts":
        inductor = bool(run.inductor) or progress.inductor_from is not None
        leaf = potential.leaf(inductor, slots)
        if run.inductor is None and inductor and leaf is not None:
            log.info("unit of chains %s: the step compiled by inductor again (from iteration"
                     " %d)", run.chains, progress.inductor_from)  # fmt: skip
    count = len(run.chains)
    total = run.warmup + run.samples
    yield McmcStarted(run.method, run.device, count, run.warmup, run.samples, potential.compiled,
                      "vectorized" if count > 1 else "single")  # fmt: skip
    divergences = torch.zeros(count, dtype=torch.int64)
    for name_list in progress.stats.get("diverging", []):
        divergences += name_list.to(torch.int64)
    sent = saved = time.monotonic()
    saved_at = state.iteration
    stop = False
    while state.iteration < total and not stop:
        state, stats = step(state, potential.grad_fn, config, leaf)
        progress.leaves += int(stats["n_steps"].max())
        if (
            run.inductor is None and leaf is not None and progress.inductor_from is None
            and state.iteration == min(AUTO_PROBE, total)
            and progress.leaves * (total - state.iteration) >= AUTO_LEAVES * state.iteration
        ):  # fmt: skip
            progress.inductor_from = state.iteration
            leaf = potential.leaf(True, slots) or leaf
        if state.iteration <= run.warmup:
            if run.keep_warmup:
                progress.warmup.append(state.z.clone())
        else:
            progress.kept.append(state.z.clone())
            for name in names:
                progress.stats[name].append(stats[name].clone())
            divergences += stats["diverging"].to(torch.int64)
            drawn = state.iteration - run.warmup
            if run.until is not None and drawn % run.check_every == 0:
                check = until_check(potential, progress.kept, progress.replayed, run.until,
                                    model, tensors, run.filename)  # fmt: skip
                progress.checks.append(check)
                stop = not check["failing"]
                for name in ("r_hat", "ess_bulk", "ess_tail"):  # live: `kiln show`'s metrics
                    if check[name] is not None:
                        yield Metric(name, drawn, float(check[name]))
        now = time.monotonic()
        done = state.iteration == total or stop
        if done or now - sent >= run.progress_every_s:
            sent = now
            for i, chain in enumerate(run.chains):
                yield ChainProgress(chain, state.iteration, total, state.iteration <= run.warmup,
                                    int(divergences[i]))  # fmt: skip
        due = state.iteration - saved_at >= run.checkpoint_every_draws or (
            now - saved >= run.checkpoint_every_s
        )
        if due and not done:
            yield Checkpoint(state.iteration, _encode(state, progress))
            saved, saved_at = time.monotonic(), state.iteration
    seconds = time.perf_counter() - started
    z = torch.stack(progress.kept, dim=1)  # (C, n, D)
    latent = potential.constrain(z.reshape(-1, potential.dim))
    flat_z = z.reshape(-1, potential.dim)
    draws, deterministic = _replay_chains(model, tensors, latent, count, run.filename, potential,
                                          flat_z)  # fmt: skip
    warmup_draws: dict[str, NDArray[Any]] = {}
    if progress.warmup:
        w = torch.stack(progress.warmup, dim=1)
        constrained = potential.constrain(w.reshape(-1, potential.dim))
        warmup_draws, _ = _replay_chains(model, tensors, constrained, count, run.filename,
                                         potential, w.reshape(-1, potential.dim))  # fmt: skip
    stats_out: dict[str, NDArray[Any]] = {
        name: torch.stack(values, dim=1).cpu().numpy().astype(_STAT_DTYPES.get(name, np.float64))
        for name, values in progress.stats.items()
    }
    note = potential.note
    yield McmcFinished(draws=draws, stats=stats_out, chain_seconds=(seconds,) * count,
                       jit=potential.compiled, note=note, deterministic=deterministic,
                       warmup_draws=warmup_draws)  # fmt: skip
    facts: dict[str, Any] = {"engine": "kiln", "resumed_at": progress.resumed_at,
                             "step": _step_fact(potential, leaf, progress)}  # fmt: skip
    if run.until is not None:
        met = bool(progress.checks) and not progress.checks[-1]["failing"]
        facts["until"] = {"targets": dict(run.until), "checks": progress.checks, "met": met,
                          "draws": len(progress.kept), "cap": run.samples}  # fmt: skip
    flat = {s: v.reshape(-1, *v.shape[2:]) for s, v in draws.items() if s not in deterministic}
    loglik = pointwise_log_likelihood(model, tensors, flat, chains=count, device=run.device,
                                      job_chains=run.job_chains)  # fmt: skip
    return UnitOutcome(loglik, facts)


def _step_fact(potential: Potential, leaf: object, progress: _Progress) -> dict[str, Any]:
    """How the sampler's step ran: its compiler (torch.jit, inductor; "" when the plain
    step ran) and the iteration from which inductor compiled it; the lockstep leapfrog
    steps."""
    compiler = potential.compiler if leaf is not None else ""
    return {"compiler": compiler, "inductor_from": progress.inductor_from,
            "leapfrog_steps": progress.leaves}  # fmt: skip


def _start(
    run: UnitRun, potential: Potential, config: SamplerConfig, names: tuple[str, ...]
) -> tuple[ChainState, _Progress]:
    """A fresh state (each chain from its own seed), or the one the checkpoint holds."""
    empty = _Progress([], [], {name: [] for name in names}, [], [])
    if run.resume is None:
        gens = [torch.Generator().manual_seed(chain_seed(run.seed, c) ^ 0x5EED) for c in run.chains]
        z0 = potential.find_initial(gens)
        seeds = [chain_seed(run.seed, c) for c in run.chains]
        return init_state(potential.grad_fn, z0, config, seeds), empty
    try:
        if peek(run.resume).get("format") != UNIT_FORMAT:
            raise StateFormatError("not an MCMC unit's checkpoint")
        tree = decode(run.resume)
        state = decode_state({k: np.asarray(v) for k, v in tree["state"].items()})
        kept, warm = _rows(tree["kept"], potential.dim), _rows(tree["warmup"], potential.dim)
        stats = {name: list(torch.as_tensor(np.asarray(tree["stats"][name])).unbind(1))
                 for name in names}  # fmt: skip
        checks = list(tree.get("checks", []))
        resumed = [int(i) for i in tree.get("resumed_at", [])]
        leaves = int(tree["leaves"])
        inductor_from = None if tree["inductor_from"] is None else int(tree["inductor_from"])
    except (KeyError, TypeError, ValueError) as e:
        raise StateFormatError(f"the unit's checkpoint cannot be read: {e}") from e
    if state.z.shape != (len(run.chains), potential.dim) or len(kept) != max(
        0, state.iteration - run.warmup
    ):
        raise StateFormatError("the unit's checkpoint does not fit its chains")
    log.info("unit of chains %s: resuming at iteration %d", run.chains, state.iteration)
    return state, _Progress(kept, warm, stats, checks, [*resumed, state.iteration], leaves,
                            inductor_from)  # fmt: skip


def _rows(value: Any, dim: int) -> list[torch.Tensor]:
    array = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if array.numel() == 0:
        return []
    if array.ndim != 3 or array.shape[2] != dim:
        raise ValueError(f"draws shaped {tuple(array.shape)}")
    return list(array.unbind(1))


def _encode(state: ChainState, progress: _Progress) -> bytes:
    count = state.z.shape[0]

    def stacked(rows: list[torch.Tensor], width: int) -> NDArray[Any]:
        if not rows:
            return np.zeros((count, 0, width))
        return torch.stack(rows, dim=1).numpy()

    return encode({
        "format": UNIT_FORMAT,
        "state": encode_state(state),
        "kept": stacked(progress.kept, state.z.shape[1]),
        "warmup": stacked(progress.warmup, state.z.shape[1]),
        "stats": {name: (torch.stack(v, dim=1).numpy() if v else np.zeros((count, 0)))
                  for name, v in progress.stats.items()},
        "checks": progress.checks,
        "resumed_at": progress.resumed_at,
        "leaves": progress.leaves,
        "inductor_from": progress.inductor_from,
    })  # fmt: skip


def _replay_chains(
    model: Callable[..., Any], tensors: dict[str, Any], latent: dict[str, torch.Tensor],
    count: int, filename: str, potential: Potential | None = None, z: torch.Tensor | None = None,
) -> tuple[dict[str, NDArray[Any]], tuple[str, ...]]:  # fmt: skip
    """(chains, draws, *shape) arrays of the latent and deterministic sites, model order.

    With the potential and the positions z (chains * draws, dim), the deterministic sites
    come from one vectorised run (checked against a plain run of the first draw), else from
    one model run per draw."""
    per = next(iter(latent.values())).shape[0] // count
    first, deterministic = _replay(model, tensors, {s: v[:1] for s, v in latent.items()}, 1,
                                   filename, None)  # fmt: skip
    if not deterministic:
        return {
            s: _to_numpy(latent[s]).reshape(count, per, *latent[s].shape[1:]) for s in first
        }, ()
    fast = potential.deterministic(z) if potential is not None and z is not None else None
    if fast is not None and all(
        s in fast and np.allclose(_to_numpy(fast[s][:1]), first[s], rtol=1e-9, atol=1e-12)
        for s in deterministic
    ):
        every = {**latent, **fast}
        return {
            s: _to_numpy(every[s]).reshape(count, per, *every[s].shape[1:]) for s in first
        }, deterministic
    out: list[dict[str, NDArray[Any]]] = []
    for c in range(count):
        part = {s: v[c * per : (c + 1) * per] for s, v in latent.items()}
        draws, _ = _replay(model, tensors, part, per, filename, None)
        out.append(draws)
    return {s: np.stack([d[s] for d in out]) for s in out[0]}, deterministic


def _pyro_unit(run: UnitRun, why: str) -> Generator[Event, None, UnitOutcome]:
    """Pyro's NUTS/HMC for each chain in turn (a model with a discrete latent site, which
    Pyro enumerates): no mid-chain checkpoint, and --until is not available."""
    if run.until is not None:
        raise ModelError(f"--until needs Kiln's sampler, which cannot run this model: {why}")
    spec = _ChainSpec(
        source=run.source, filename=run.filename, function=run.function, data=dict(run.data),
        method=run.method, warmup=run.warmup, samples=run.samples, seed=run.seed,
        target_accept=run.target_accept, max_tree_depth=run.max_tree_depth,
        num_steps=run.num_steps, jit=run.jit, device=run.device, progress_every_s=1e9,
        keep_warmup=run.keep_warmup,
    )  # fmt: skip
    count = len(run.chains)
    yield McmcStarted(run.method, run.device, count, run.warmup, run.samples, run.jit,
                      "sequential")  # fmt: skip
    results = []
    for chain in run.chains:
        result = _run_chain(spec, chain, lambda _message: None, None)
        total = run.warmup + run.samples
        divergences = int(np.asarray(result.stats.get("diverging", np.zeros(0))).sum())
        yield ChainProgress(chain, total, total, False, divergences)
        results.append(result)
    draws = {s: np.stack([r.draws[s] for r in results]) for s in results[0].draws}
    stats = {n: np.stack([r.stats[n] for r in results]) for n in results[0].stats}
    warmup = {s: np.stack([r.warmup_draws[s] for r in results]) for s in results[0].warmup_draws}
    note = f"Pyro's {run.method.upper()} kernel: {why}"
    notes = {r.note for r in results if r.note}
    deterministic = results[0].deterministic
    yield McmcFinished(draws=draws, stats=stats,
                       chain_seconds=tuple(r.seconds for r in results),
                       jit=all(r.jit for r in results),
                       note="; ".join([note, *sorted(notes)]), deterministic=deterministic,
                       warmup_draws=warmup)  # fmt: skip
    module = load_module(run.source, run.filename)
    model = user_model(get_function(module, run.function, run.filename), run.filename)
    tensors = to_tensors(run.data, run.device, getattr(module, "DTYPES", None))
    flat = {s: v.reshape(-1, *v.shape[2:]) for s, v in draws.items() if s not in deterministic}
    loglik = pointwise_log_likelihood(model, tensors, flat, chains=count, device=run.device,
                                      job_chains=run.job_chains)  # fmt: skip
    return UnitOutcome(loglik, {"engine": "pyro", "resumed_at": []})

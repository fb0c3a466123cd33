"""run_mcmc(): NUTS/HMC chains of a user's model file, in child processes or a thread, relayed
from Pyro's hook_fn as a generator of events."""

from __future__ import annotations

import logging
import math
import multiprocessing
import pickle
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.mcmc import HMC, MCMC, NUTS
from tqdm import tqdm

from inference.events import ChainProgress, Event, McmcFinished, McmcStarted
from inference.usercode import describe_exception, get_function, load_module, to_tensors
from kiln.errors import InfraError, KilnError, ModelError, SpecError

log = logging.getLogger(__name__)

METHODS = ("nuts", "hmc")
# Per draw: a divergent transition; the adapted step size; the mean acceptance probability
# over the trajectory (NUTS) or of its end (HMC); the Hamiltonian at the trajectory's start;
# the number of NUTS doublings; lp, minus the potential energy: the log density in the
# unconstrained space, Jacobian included (Stan's lp__).
STATS = ("diverging", "step_size", "accept_prob", "energy", "tree_depth", "lp")  # NUTS
HMC_STATS = ("diverging", "step_size", "accept_prob", "energy", "lp")
_STAT_DTYPES = {"diverging": np.bool_, "tree_depth": np.int64}  # the others are float64
_STOP_WAIT_S = 10.0  # how long closing waits for a thread run to reach its next iteration

# Private Pyro attributes read here (pyro-ppl 1.9; check them when upgrading):
#   HMC._jit_compile         the jit_compile argument
#   HMC._divergences         list of post-warmup iterations that diverged (grows by one)
#   HMC._mean_accept_prob    running mean of accept_prob, restarted when sampling starts
#   HMC._potential_energy_last  potential energy of the current state (its cache)
#   HMC._kinetic_energy(r)   first call in HMC.sample is the kinetic energy of the new momentum
#   NUTS._build_tree(z, r, z_grads, log_slice, direction, tree_depth, energy_current)


class _Stopped(Exception):
    """Raised from hook_fn when the caller closed the generator (thread runs)."""


@dataclass(frozen=True, slots=True)
class _ChainSpec:
    """What a chain needs as plain values: a spawned child rebuilds the model from source."""

    source: str
    filename: str
    function: str
    data: dict[str, Any]
    method: str
    warmup: int
    samples: int
    seed: int
    target_accept: float
    max_tree_depth: int
    num_steps: int | None
    jit: bool
    device: str
    progress_every_s: float


@dataclass(frozen=True, slots=True)
class _ChainResult:
    draws: dict[str, np.ndarray]  # site -> (samples, *shape), in the model's order
    stats: dict[str, np.ndarray]  # name -> (samples,)
    seconds: float
    jit: bool
    note: str
    deterministic: tuple[str, ...]


class _Untraceable(Exception):
    """The model turns a traced value into a Python value: a trace would run with a constant."""


class _TraceCheck:
    """Kernel mixin: with jit_compile, tracing (in setup) fails when the tracer warns that a
    line of the user's file turns a tensor into a Python value (`if tau > 1`, `int(n)`,
    `.item()`). torch.jit.trace would keep that value as a constant and the chain would
    sample a different model without a word, so such a model runs without jit instead.

    Pyro's own ignore_jit_warnings is off so that these warnings reach here; the tracer's
    other warnings are dropped as Pyro would drop them, and any other warning is issued again.
    warnings.catch_warnings is process-wide: a thread run holds it only while it traces.
    """

    kiln_filename = ""
    _jit_compile: bool

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        if not self._jit_compile:
            return super().setup(warmup_steps, *args, **kwargs)  # type: ignore[misc, no-any-return]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            super().setup(warmup_steps, *args, **kwargs)  # type: ignore[misc]
        for w in caught:
            if not issubclass(w.category, torch.jit.TracerWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            elif w.filename == self.kiln_filename and "to a Python" in str(w.message):
                what = str(w.message).split(". ")[0]
                raise _Untraceable(f"TracerWarning at {w.filename} line {w.lineno}: {what}")
        return None


class _NutsWithStats(_TraceCheck, NUTS):
    """NUTS that keeps each iteration's starting Hamiltonian and number of doublings."""

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.kiln_energy: Any = math.nan
        self.kiln_depth = -1
        return super().sample(params)  # type: ignore[no-any-return]

    def _build_tree(self, *args: Any) -> Any:
        # (z, r, z_grads, log_slice, direction, tree_depth, energy_current): sample() calls it
        # with tree_depth 0, 1, 2, ... (and it calls itself below that depth).
        tree_depth, energy_current = args[5], args[6]
        if tree_depth > self.kiln_depth:
            self.kiln_depth = tree_depth
            self.kiln_energy = energy_current
        return super()._build_tree(*args)


class _HmcWithStats(_TraceCheck, HMC):
    """HMC with a fixed number of leapfrog steps when given, keeping each iteration's energy."""

    def __init__(self, model: Callable[..., Any], fixed_steps: int | None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._fixed_steps = fixed_steps
        self.kiln_energy: Any = math.nan
        self._kiln_pe: Any = None

    @property
    def num_steps(self) -> int:
        # Pyro's own num_steps keeps the trajectory length and so varies with the step size.
        return self._fixed_steps or max(1, int(self.trajectory_length / self.step_size))

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.kiln_energy = math.nan
        self._kiln_pe = self._potential_energy_last
        return super().sample(params)  # type: ignore[no-any-return]

    def _kinetic_energy(self, r_unscaled: dict[Any, torch.Tensor]) -> Any:
        energy = super()._kinetic_energy(r_unscaled)
        if self._kiln_pe is not None:  # the first call in sample(): the starting momentum
            self.kiln_energy = energy + self._kiln_pe
            self._kiln_pe = None
        return energy


class _Recorder:
    """Pyro's hook_fn: per-draw sample stats, throttled progress messages, the stop flag."""

    def __init__(
        self, chain: int, spec: _ChainSpec, send: Callable[[Any], None],
        stop: threading.Event | None,
    ) -> None:  # fmt: skip
        self.chain, self.send, self.stop = chain, send, stop
        self.warmup, self.total = spec.warmup, spec.warmup + spec.samples
        self.every_s = spec.progress_every_s
        self.names = STATS if spec.method == "nuts" else HMC_STATS
        self.stats: dict[str, list[Any]] = {name: [] for name in self.names}
        self.done = self.divergences = 0
        self.mean_accept = 0.0
        self.sent = time.monotonic()

    def hook(self, kernel: _NutsWithStats | _HmcWithStats, params: Any, stage: str, i: int) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _Stopped
        self.done += 1
        divergences = len(kernel._divergences)
        mean = kernel._mean_accept_prob
        if self.done > self.warmup:
            # Invert the running mean: mean_n = mean_{n-1} + (accept_n - mean_{n-1}) / n.
            n = i + 1
            accept = self.mean_accept + n * (mean - self.mean_accept)
            row = {
                "diverging": divergences > self.divergences,
                "step_size": float(kernel.step_size),
                "accept_prob": min(max(accept, 0.0), 1.0),
                "energy": float(kernel.kiln_energy),
                "tree_depth": getattr(kernel, "kiln_depth", -1) + 1,
                "lp": -float(kernel._potential_energy_last),
            }
            for name in self.names:
                self.stats[name].append(row[name])
        self.mean_accept = mean
        self.divergences = divergences
        now = time.monotonic()
        if self.done == self.total or now - self.sent >= self.every_s:
            self.report()
            self.sent = now

    def report(self) -> None:
        progress = (self.done, self.total, self.done < self.warmup, self.divergences)
        self.send(("progress", self.chain, progress))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            n: np.asarray(v, dtype=_STAT_DTYPES.get(n, np.float64)) for n, v in self.stats.items()
        }


def chain_seed(seed: int, chain: int) -> int:
    """The seed of one chain: well mixed from the job's seed and the chain index."""
    return int(np.random.SeedSequence([seed, chain]).generate_state(1)[0])


def _load(spec: _ChainSpec) -> tuple[Callable[..., Any], dict[str, Any]]:
    module = load_module(spec.source, spec.filename)
    model = get_function(module, spec.function, spec.filename)
    return model, to_tensors(spec.data, spec.device, getattr(module, "DTYPES", None))


_Sampled = tuple[Callable[..., Any], dict[str, Any], dict[str, torch.Tensor], dict[str, np.ndarray]]


def _sample(
    spec: _ChainSpec, chain: int, jit: bool, send: Callable[[Any], None],
    stop: threading.Event | None,
) -> _Sampled:  # fmt: skip
    """One chain from a fresh module and seed: (model, data tensors, latent draws, stats)."""
    pyro.set_rng_seed(chain_seed(spec.seed, chain))  # before loading: module code may draw
    model, tensors = _load(spec)
    options: dict[str, Any] = dict(
        target_accept_prob=spec.target_accept, jit_compile=jit, ignore_jit_warnings=False
    )
    kernel: _NutsWithStats | _HmcWithStats
    if spec.method == "nuts":
        kernel = _NutsWithStats(model, max_tree_depth=spec.max_tree_depth, **options)
    else:
        kernel = _HmcWithStats(model, spec.num_steps, **options)
    kernel.kiln_filename = spec.filename
    recorder = _Recorder(chain, spec, send, stop)
    recorder.report()
    mcmc = MCMC(
        kernel, num_samples=spec.samples, warmup_steps=spec.warmup, num_chains=1,
        hook_fn=recorder.hook, disable_progbar=True,
    )  # fmt: skip
    mcmc.run(**tensors)
    return model, tensors, mcmc.get_samples(group_by_chain=False), recorder.arrays()


def _replay(
    model: Callable[..., Any], tensors: dict[str, Any], latent: dict[str, torch.Tensor],
    samples: int, filename: str, stop: threading.Event | None,
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:  # fmt: skip
    """Latent and pyro.deterministic draws in the model's site order; the deterministic names.

    The model runs once per draw (once in all when it has no deterministic site), conditioned
    on that draw: models need not be batch-safe.
    """
    order: list[str] = []
    deterministic: list[str] = []
    values: dict[str, list[torch.Tensor]] = {}
    for i in range(samples):
        if i > 0 and not deterministic:
            break
        if stop is not None and stop.is_set():
            raise _Stopped
        draw = {name: value[i] for name, value in latent.items()}
        try:
            with torch.no_grad():
                trace = poutine.trace(poutine.condition(model, data=draw)).get_trace(**tensors)
        except Exception as e:
            raise ModelError(
                f"the model raised {describe_exception(e, filename)} while computing its "
                f"deterministic sites for draw {i}"
            ) from e
        if i == 0:
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if (site["infer"] or {}).get("_deterministic"):
                    deterministic.append(name)
                    order.append(name)
                elif name in latent:
                    order.append(name)
            order += [name for name in latent if name not in order]
            values = {name: [] for name in deterministic}
        for name in deterministic:
            values[name].append(torch.as_tensor(trace.nodes[name]["value"]))
    draws = {}
    for name in order:
        stacked = latent[name] if name in latent else torch.stack(values[name])
        draws[name] = _to_numpy(stacked)
    return draws, tuple(deterministic)


def _to_numpy(value: torch.Tensor) -> np.ndarray:
    array = value.detach().cpu().numpy()
    return array.astype(np.float64) if array.dtype.kind == "f" else array


def _run_chain(
    spec: _ChainSpec, chain: int, send: Callable[[Any], None], stop: threading.Event | None
) -> _ChainResult:
    """One chain, falling back to jit_compile=False when the model cannot be traced."""
    started = time.perf_counter()
    jit, note = spec.jit, ""
    try:
        model, tensors, latent, stats = _sample(spec, chain, jit, send, stop)
    except (_Stopped, KilnError):
        raise
    except Exception as e:
        if not jit:
            raise ModelError(f"the model raised {describe_exception(e, spec.filename)}") from e
        why = str(e) if isinstance(e, _Untraceable) else _headline(e)
        jit, note = False, f"jit_compile failed ({why}); ran without it"
        log.info("mcmc chain %d: %s", chain, note)
        try:
            model, tensors, latent, stats = _sample(spec, chain, jit, send, stop)
        except (_Stopped, KilnError):
            raise
        except Exception as e2:
            message = f"the model raised {describe_exception(e2, spec.filename)}"
            raise ModelError(message) from e2
    draws, deterministic = _replay(model, tensors, latent, spec.samples, spec.filename, stop)
    seconds = time.perf_counter() - started
    return _ChainResult(draws, stats, seconds, jit, note, deterministic)


def _headline(e: BaseException, limit: int = 200) -> str:
    line = (str(e).strip().splitlines() or [""])[0]
    line = line if len(line) <= limit else line[:limit] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def _portable(e: BaseException) -> BaseException:
    """The error itself when it pickles (KilnErrors keep their fields), else its message."""
    try:
        pickle.dumps(e)
    except Exception:
        return ModelError(f"{type(e).__name__}: {e}")
    return e


def _chain_process(spec: _ChainSpec, chain: int, messages: Any) -> None:
    """Entry of a spawned child: run one chain, put ("done"|"error", chain, payload) last."""
    torch.set_num_threads(1)  # chains share the machine's cores
    # Pyro's (disabled) progress bar is a tqdm, whose default lock is a multiprocessing
    # semaphore; a chain terminated on cancel would leak it. A thread lock does here.
    tqdm.set_lock(threading.RLock())
    try:
        result = _run_chain(spec, chain, messages.put, None)
    except BaseException as e:
        messages.put(("error", chain, _portable(e)))
    else:
        messages.put(("done", chain, result))


def _chains_in_thread(
    spec: _ChainSpec, chains: int, messages: queue.Queue[Any], stop: threading.Event
) -> None:
    for chain in range(chains):
        try:
            result = _run_chain(spec, chain, messages.put, stop)
        except _Stopped:
            return
        except BaseException as e:
            messages.put(("error", chain, e))
            return
        messages.put(("done", chain, result))


class _Processes:
    """One spawned child process per chain."""

    parallel = "processes"

    def __init__(self, spec: _ChainSpec, chains: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe with torch threads and CUDA
        self.messages = ctx.Queue()
        self.procs = [
            ctx.Process(target=_chain_process, args=(spec, c, self.messages),
                        name=f"kiln-mcmc-chain-{c}", daemon=True)
            for c in range(chains)
        ]  # fmt: skip
        self.suspect: set[int] = set()

    def start(self) -> None:
        for proc in self.procs:
            proc.start()

    def check(self, finished: set[int]) -> None:
        """Raise when a chain's process ended without its result (seen twice, so a result
        still in the pipe is read first)."""
        for chain, proc in enumerate(self.procs):
            if chain in finished or proc.exitcode is None:
                continue
            if chain in self.suspect:
                code = proc.exitcode
                why = "killed, perhaps out of memory" if code == -9 else "crashed"
                # Retried (up to max_attempts): an OOM kill is the host's, not the model's.
                raise InfraError(f"chain {chain}'s process ended without its draws (exit code"
                                 f" {code}: {why})")  # fmt: skip
            self.suspect.add(chain)

    def stop(self, finished: set[int]) -> None:
        """Terminate chains still running; let those that sent their draws exit by themselves
        (so their exit handlers run), for a few seconds."""
        for chain, proc in enumerate(self.procs):
            if chain not in finished and proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            if proc.pid is None:
                continue  # never started
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            proc.close()
        self.messages.close()


class _Thread:
    """Chains one after another in a background thread, stopped through hook_fn."""

    parallel = "sequential"

    def __init__(self, spec: _ChainSpec, chains: int) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.flag = threading.Event()
        self.thread = threading.Thread(
            target=_chains_in_thread, args=(spec, chains, self.messages, self.flag),
            name="kiln-mcmc", daemon=True,
        )  # fmt: skip

    def start(self) -> None:
        self.thread.start()

    def check(self, finished: set[int]) -> None:
        if not self.thread.is_alive() and self.messages.empty():
            raise RuntimeError("the MCMC thread ended without the draws of every chain")

    def stop(self, finished: set[int]) -> None:
        self.flag.set()
        if self.thread.ident is not None:
            self.thread.join(timeout=_STOP_WAIT_S)
            if self.thread.is_alive():
                log.warning("mcmc: chains thread still running %.0fs after stop", _STOP_WAIT_S)


def _relay(
    runner: _Processes | _Thread, chains: int, total: int, every_s: float,
    results: dict[int, _ChainResult],
) -> Iterator[ChainProgress]:  # fmt: skip
    """Yield ChainProgress as chains report it, and the progress of the chain that reported
    longest ago again when nothing came for `every_s` seconds; fill in `results`."""
    latest = {c: ChainProgress(c, 0, total, True, 0) for c in range(chains)}
    yielded = dict.fromkeys(range(chains), time.monotonic())
    quiet_s = every_s * 1.1  # a little over, so that a chain's own report usually comes first
    while len(results) < chains:
        wait = max(yielded.values()) + quiet_s - time.monotonic()
        try:
            kind, chain, payload = runner.messages.get(timeout=max(wait, 0.01))
        except queue.Empty:
            runner.check(set(results))
            if time.monotonic() - max(yielded.values()) >= quiet_s:
                chain = min(yielded, key=yielded.__getitem__)
                yielded[chain] = time.monotonic()
                yield latest[chain]
            continue
        if kind == "progress":
            latest[chain] = ChainProgress(chain, *payload)
            yielded[chain] = time.monotonic()
            yield latest[chain]
        elif kind == "done":
            results[chain] = payload
        else:
            raise payload


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
    notes = {r.note for r in ordered if r.note}
    if len(notes) == 1 and all(r.note for r in ordered):
        note = notes.pop()
    else:
        note = "; ".join(f"chain {c}: {r.note}" for c, r in enumerate(ordered) if r.note)
    return McmcFinished(
        draws=draws, stats=stats, chain_seconds=tuple(r.seconds for r in ordered),
        jit=all(r.jit for r in ordered), note=note, deterministic=first.deterministic,
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
) -> Iterator[Event]:
    """Run `chains` NUTS or HMC chains of `function` in the user's file `source`, on `data`
    (JSON-style, see usercode.to_tensors), yielding McmcStarted, ChainProgress... and
    McmcFinished.

    Chains run in parallel in spawned child processes unless `processes` is False or this
    process is daemonic (a Celery prefork child), then one after another in a thread. Each
    chain reseeds from `seed` and its index, so the same seed gives the same draws. With
    `jit`, a chain whose model cannot be traced reruns without jit_compile (McmcFinished
    says so). `num_steps` fixes HMC's leapfrog steps (None: a trajectory length of 2 pi).
    Closing the generator stops every chain. Raises ModelError (the user's line) when the
    model raises, DataError for unusable data, SpecError for bad arguments.
    """
    _check_args(method, warmup, samples, chains, seed)
    spec = _ChainSpec(
        source=source, filename=filename, function=function, data=dict(data), method=method,
        warmup=warmup, samples=samples, seed=seed, target_accept=target_accept,
        max_tree_depth=max_tree_depth, num_steps=num_steps, jit=jit, device=device,
        progress_every_s=progress_every_s,
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

"""One MCMC chain of a user's model file: its spec and result, sampling with a jit fallback, and
the replay that adds pyro.deterministic sites to the draws."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from numpy.typing import NDArray
from pyro.infer.mcmc import MCMC

from inference.mcmc_kernels import _Recorder, _Stopped, _Untraceable, make_kernel
from inference.usercode import describe_exception, get_function, load_module, to_tensors
from kiln.errors import KilnError, ModelError

log = logging.getLogger(__name__)


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
    keep_warmup: bool = False


@dataclass(frozen=True, slots=True)
class _ChainResult:
    draws: dict[str, NDArray[Any]]  # site -> (samples, *shape), in the model's order
    stats: dict[str, NDArray[Any]]  # name -> (samples,)
    seconds: float
    jit: bool
    note: str
    deterministic: tuple[str, ...]
    warmup_draws: dict[str, NDArray[Any]]  # as draws, (warmup, *shape); empty unless kept


def chain_seed(seed: int, chain: int) -> int:
    """The seed of one chain: well mixed from the job's seed and the chain index."""
    return int(np.random.SeedSequence([seed, chain]).generate_state(1)[0])


def _load(spec: _ChainSpec) -> tuple[Callable[..., Any], dict[str, Any]]:
    module = load_module(spec.source, spec.filename)
    model = get_function(module, spec.function, spec.filename)
    return model, to_tensors(spec.data, spec.device, getattr(module, "DTYPES", None))


_Latent = dict[str, torch.Tensor]
_Sampled = tuple[Callable[..., Any], dict[str, Any], _Latent, dict[str, NDArray[Any]], _Latent]


def _sample(
    spec: _ChainSpec, chain: int, jit: bool, send: Callable[[Any], None],
    stop: threading.Event | None,
) -> _Sampled:  # fmt: skip
    """One chain from a fresh module and seed: (model, data tensors, latent draws, stats,
    latent warmup draws: empty unless spec.keep_warmup)."""
    pyro.set_rng_seed(chain_seed(spec.seed, chain))  # before loading: module code may draw
    model, tensors = _load(spec)
    kernel = make_kernel(
        model, spec.method, max_tree_depth=spec.max_tree_depth, num_steps=spec.num_steps,
        target_accept_prob=spec.target_accept, jit_compile=jit, ignore_jit_warnings=False,
    )  # fmt: skip
    kernel.kiln_filename = spec.filename
    recorder = _Recorder(
        chain, spec.method, spec.warmup, spec.samples, spec.progress_every_s, send, stop,
        spec.keep_warmup,
    )  # fmt: skip
    recorder.report()
    mcmc = MCMC(
        kernel, num_samples=spec.samples, warmup_steps=spec.warmup, num_chains=1,
        hook_fn=recorder.hook, disable_progbar=True,
    )  # fmt: skip
    mcmc.run(**tensors)
    latent = cast(dict[str, torch.Tensor], mcmc.get_samples(group_by_chain=False))
    warmup = recorder.warmup_draws(mcmc.transforms or {})
    return model, tensors, latent, recorder.arrays(), warmup


def _replay(
    model: Callable[..., Any], tensors: dict[str, Any], latent: dict[str, torch.Tensor],
    samples: int, filename: str, stop: threading.Event | None,
) -> tuple[dict[str, NDArray[Any]], tuple[str, ...]]:  # fmt: skip
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


def _to_numpy(value: torch.Tensor) -> NDArray[Any]:
    array = value.detach().cpu().numpy()
    return array.astype(np.float64) if array.dtype.kind == "f" else array


def _run_chain(
    spec: _ChainSpec, chain: int, send: Callable[[Any], None], stop: threading.Event | None
) -> _ChainResult:
    """One chain, falling back to jit_compile=False when the model cannot be traced."""
    started = time.perf_counter()
    jit, note = spec.jit, ""
    try:
        model, tensors, latent, stats, warmup = _sample(spec, chain, jit, send, stop)
    except (_Stopped, KilnError):
        raise
    except Exception as e:
        if not jit:
            raise ModelError(f"the model raised {describe_exception(e, spec.filename)}") from e
        why = str(e) if isinstance(e, _Untraceable) else _headline(e)
        jit, note = False, f"jit_compile failed ({why}); ran without it"
        log.info("mcmc chain %d: %s", chain, note)
        try:
            model, tensors, latent, stats, warmup = _sample(spec, chain, jit, send, stop)
        except (_Stopped, KilnError):
            raise
        except Exception as e2:
            message = f"the model raised {describe_exception(e2, spec.filename)}"
            raise ModelError(message) from e2
    draws, deterministic = _replay(model, tensors, latent, spec.samples, spec.filename, stop)
    warmup_draws: dict[str, NDArray[Any]] = {}
    if warmup:  # deterministic sites of the warmup draws too, as of the kept draws
        warmup_draws, _ = _replay(model, tensors, warmup, spec.warmup, spec.filename, stop)
    seconds = time.perf_counter() - started
    return _ChainResult(draws, stats, seconds, jit, note, deterministic, warmup_draws)


def _headline(e: BaseException, limit: int = 200) -> str:
    line = (str(e).strip().splitlines() or [""])[0]
    line = line if len(line) <= limit else line[:limit] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__

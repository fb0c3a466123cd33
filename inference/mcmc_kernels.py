"""MCMC kernels that keep per-draw sample stats (NUTS, HMC) and the hook_fn that records them."""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from pyro.infer.mcmc import HMC, NUTS
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

# Per draw: a divergent transition; the adapted step size; the mean acceptance probability
# over the trajectory (NUTS) or of its end (HMC); the Hamiltonian at the trajectory's start;
# the number of NUTS doublings; lp, minus the potential energy: the log density in the
# unconstrained space, Jacobian included (Stan's lp__).
STATS = ("diverging", "step_size", "accept_prob", "energy", "tree_depth", "lp")  # NUTS
HMC_STATS = ("diverging", "step_size", "accept_prob", "energy", "lp")
_STAT_DTYPES: dict[str, type[np.generic]] = {"diverging": np.bool_, "tree_depth": np.int64}

# torch.jit re-exports TracerWarning without listing it in __all__.
_TracerWarning: type[Warning] = torch.jit.TracerWarning  # type: ignore[attr-defined]

# Private Pyro attributes read here (pyro-ppl 1.9; check them when upgrading):
#   HMC._jit_compile         the jit_compile argument
#   HMC._divergences         list of post-warmup iterations that diverged (grows by one)
#   HMC._mean_accept_prob    running mean of accept_prob, restarted when sampling starts
#   HMC._potential_energy_last  potential energy of the current state (its cache)
#   HMC._kinetic_energy(r)   first call in HMC.sample is the kinetic energy of the new momentum
#   NUTS._build_tree(z, r, z_grads, log_slice, direction, tree_depth, energy_current)

_Params = dict[str, torch.Tensor]
# Pyro's kernel methods are unannotated; these are the signatures the subclasses call.
_SampleFn = Callable[[_Params], _Params]


class _Stopped(Exception):
    """Raised from hook_fn when the caller closed the generator (thread runs)."""


class _Untraceable(Exception):
    """The model turns a traced value into a Python value: a trace would run with a constant."""


class _TraceCheck(MCMCKernel):
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
        # The kernel's own setup, next in the MRO (this mixin comes before NUTS/HMC).
        setup = cast(Callable[..., None], super().setup)
        if not self._jit_compile:
            return setup(warmup_steps, *args, **kwargs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", _TracerWarning)
            setup(warmup_steps, *args, **kwargs)
        for w in caught:
            if not issubclass(w.category, _TracerWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            elif w.filename == self.kiln_filename and "to a Python" in str(w.message):
                what = str(w.message).split(". ")[0]
                raise _Untraceable(f"TracerWarning at {w.filename} line {w.lineno}: {what}")
        return None


class _NutsWithStats(_TraceCheck, NUTS):
    """NUTS that keeps each iteration's starting Hamiltonian and number of doublings."""

    def sample(self, params: _Params) -> _Params:
        self.kiln_energy: Any = math.nan
        self.kiln_depth = -1
        return cast(_SampleFn, super().sample)(params)

    def _build_tree(self, *args: Any) -> Any:
        # (z, r, z_grads, log_slice, direction, tree_depth, energy_current): sample() calls it
        # with tree_depth 0, 1, 2, ... (and it calls itself below that depth).
        tree_depth, energy_current = args[5], args[6]
        if tree_depth > self.kiln_depth:
            self.kiln_depth = tree_depth
            self.kiln_energy = energy_current
        return cast(Callable[..., Any], super()._build_tree)(*args)


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

    def sample(self, params: _Params) -> _Params:
        self.kiln_energy = math.nan
        self._kiln_pe = self._potential_energy_last
        return cast(_SampleFn, super().sample)(params)

    def _kinetic_energy(self, r_unscaled: dict[Any, torch.Tensor]) -> Any:
        energy = cast(Callable[[dict[Any, torch.Tensor]], Any], super()._kinetic_energy)(r_unscaled)
        if self._kiln_pe is not None:  # the first call in sample(): the starting momentum
            self.kiln_energy = energy + self._kiln_pe
            self._kiln_pe = None
        return energy


def make_kernel(
    model: Callable[..., Any], method: str, *, max_tree_depth: int, num_steps: int | None,
    **options: Any,
) -> _NutsWithStats | _HmcWithStats:  # fmt: skip
    """The NUTS (`method` "nuts") or HMC kernel of `model`, with Pyro's kernel `options`."""
    if method == "nuts":
        nuts = cast(Callable[..., _NutsWithStats], _NutsWithStats)  # Pyro's __init__ is untyped
        return nuts(model, max_tree_depth=max_tree_depth, **options)
    return _HmcWithStats(model, num_steps, **options)


class _Recorder:
    """Pyro's hook_fn: per-draw sample stats, throttled progress messages, the stop flag."""

    def __init__(
        self, chain: int, method: str, warmup: int, samples: int, every_s: float,
        send: Callable[[Any], None], stop: threading.Event | None, keep_warmup: bool = False,
    ) -> None:  # fmt: skip
        self.chain, self.send, self.stop = chain, send, stop
        # keep_warmup: each warmup iteration's state (unconstrained, as Pyro hands it over).
        self.keep_warmup = keep_warmup
        self.warmup_params: list[dict[str, torch.Tensor]] = []
        self.warmup, self.total = warmup, warmup + samples
        self.every_s = every_s
        self.names = STATS if method == "nuts" else HMC_STATS
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
        if self.keep_warmup and self.done <= self.warmup:
            self.warmup_params.append({k: v.detach().clone() for k, v in params.items()})
        if self.done > self.warmup:
            # Invert the running mean: mean_n = mean_{n-1} + (accept_n - mean_{n-1}) / n.
            n = i + 1
            accept = self.mean_accept + n * (mean - self.mean_accept)
            potential = cast(torch.Tensor, kernel._potential_energy_last)  # set by sample()
            row = {
                "diverging": divergences > self.divergences,
                "step_size": float(kernel.step_size),
                "accept_prob": min(max(accept, 0.0), 1.0),
                "energy": float(kernel.kiln_energy),
                "tree_depth": getattr(kernel, "kiln_depth", -1) + 1,
                "lp": -float(potential),
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

    def warmup_draws(self, transforms: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The kept warmup states by site, (warmup, *shape), in the constrained space (as
        MCMC.get_samples maps the draws, through the kernel's `transforms`)."""
        if not self.warmup_params:
            return {}
        out = {}
        for name in self.warmup_params[0]:
            z = torch.stack([p[name] for p in self.warmup_params])
            out[name] = transforms[name].inv(z) if name in transforms else z
        return out

    def arrays(self) -> dict[str, NDArray[Any]]:
        return {
            n: np.asarray(v, dtype=_STAT_DTYPES.get(n, np.float64)) for n, v in self.stats.items()
        }

"""A Pyro model's potential energy over a flat unconstrained vector, for Kiln's own NUTS: the
latent sites' layout and transforms, one evaluation for a batch of chains, compiled once when
the model allows it."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to
from torch.distributions.transforms import Transform

from inference.mcmc_chain import _headline
from inference.nuts_leaf import LeafFn, leaf_core, slot_masks
from inference.usercode import describe_exception
from kiln.errors import KilnError, ModelError

log = logging.getLogger(__name__)

_INIT_RADIUS = 2.0  # initial positions: uniform in (-2, 2) per unconstrained coordinate
_INIT_TRIES = 100
_REPLAY_CHUNK = 1000  # draws per vectorised run of the model for its deterministic sites
# A compiled evaluation must agree with the model run through Pyro at random points.
_CHECK_RTOL, _CHECK_ATOL = 1e-7, 1e-9


_T = torch.Tensor


class Unsupported(Exception):
    """The model has a site this engine cannot sample (a discrete latent): use Pyro's MCMC."""


@dataclass(frozen=True, slots=True)
class _Site:
    name: str
    transform: Transform
    offset: int
    size: int
    shape: tuple[int, ...]  # the unconstrained value's shape
    constrained_shape: tuple[int, ...]


def _layout(model: Callable[..., Any], kwargs: Mapping[str, Any]) -> tuple[_Site, ...]:
    with torch.no_grad(), pyro.validation_enabled(False):
        trace = poutine.trace(model).get_trace(**kwargs)
    sites: list[_Site] = []
    offset = 0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        if (site["infer"] or {}).get("_deterministic"):
            continue
        fn: Any = site["fn"]
        if fn.support.is_discrete:
            raise Unsupported(f"latent site `{name}` is discrete ({type(fn).__name__})")
        transform = biject_to(fn.support)
        value = torch.as_tensor(site["value"])
        unconstrained = transform.inv(value)
        shape = tuple(unconstrained.shape)
        size = math.prod(shape)
        sites.append(_Site(name, transform, offset, size, shape, tuple(value.shape)))
        offset += size
    if not sites:
        raise ModelError(
            "the model has no latent sample site, so there is nothing for MCMC to draw"
        )
    return tuple(sites)


class Potential:
    """Potential energy (minus the log joint density in the unconstrained space, Jacobians
    included) of `model` on `kwargs`, for `chains` chains at once.

    `grad_fn(z)` takes z (chains, dim) and returns (potential (chains,), gradient (chains,
    dim)). With `compile`, the model is traced once into one graph of torch operations that
    evaluates every chain and its gradient (torch.func.vmap of grad_and_value, recorded by
    make_fx and run by torch.jit); the graph is checked against the model run through Pyro at
    random points. A model that cannot be traced that way (Python control flow on a sampled
    value, an operation vmap lacks) or whose graph disagrees runs through Pyro at every step,
    one chain at a time; `note` says why. A chain whose evaluation raises (a Cholesky of a
    matrix that is not positive definite at an extreme point) gets an infinite potential: the
    sampler treats it as a divergence.
    """

    def __init__(
        self, model: Callable[..., Any], kwargs: Mapping[str, Any], chains: int, *,
        compile: bool = True, filename: str = "",
    ) -> None:  # fmt: skip
        self.model, self.kwargs, self.chains, self.filename = model, dict(kwargs), chains, filename
        self.sites = _layout(model, self.kwargs)
        self.dim = sum(s.size for s in self.sites)
        self.compiled = False
        self.note = ""
        self._graph: Callable[[torch.Tensor], Any] | None = None
        self._fx: Any = None  # the potential's graph of torch operations, when compiled
        self.compiler = ""  # "torch.jit" or "inductor" once compiled
        if compile:
            self._compile()

    # ---- the model's density, one chain ----
    def values(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Constrained values by site of one chain's position z (dim,)."""
        return {
            s.name: s.transform(z[s.offset : s.offset + s.size].reshape(s.shape))
            for s in self.sites
        }

    def _single(self, z: torch.Tensor) -> torch.Tensor:
        ldj = torch.zeros((), dtype=z.dtype, device=z.device)
        values: dict[str, torch.Tensor] = {}
        for s in self.sites:
            u = z[s.offset : s.offset + s.size].reshape(s.shape)
            x = s.transform(u)
            jacobian: Any = s.transform.log_abs_det_jacobian  # untyped in torch
            ldj = ldj + jacobian(u, x).sum()
            values[s.name] = x
        with pyro.validation_enabled(False):
            trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(
                **self.kwargs
            )
            log_joint = torch.zeros((), dtype=z.dtype, device=z.device)
            for site in trace.nodes.values():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                fn: Any = site["fn"]
                lp = fn.log_prob(site["value"])
                scale, mask = site["scale"], site["mask"]
                if mask is not None and mask is not True:
                    lp = lp.masked_fill(~torch.as_tensor(mask, device=lp.device), 0.0)
                if not (isinstance(scale, int | float) and scale == 1.0):
                    lp = lp * scale
                log_joint = log_joint + lp.sum()
        return -(log_joint + ldj)

    def _eager(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pes, grads = [], []
        for row in z:
            x = row.detach().clone().requires_grad_(True)
            try:
                with torch.enable_grad():
                    pe = self._single(x)
                    (grad,) = torch.autograd.grad(pe, x)
            except KilnError:
                raise
            except Exception as e:
                if not (isinstance(e, RuntimeError | ValueError) and _numerical(e)):
                    raise ModelError(
                        f"the model raised {describe_exception(e, self.filename)}"
                    ) from e
                pe, grad = torch.tensor(math.inf, dtype=z.dtype), torch.zeros_like(row)
            pes.append(pe.detach())
            grads.append(grad.detach())
        return torch.stack(pes), torch.stack(grads)

    # ---- compiled ----
    def _compile(self) -> None:
        from torch.fx.experimental.proxy_tensor import make_fx

        def single(z: torch.Tensor) -> torch.Tensor:  # make_fx reads a plain function's arity
            return self._single(z)

        batched = torch.func.vmap(torch.func.grad_and_value(single))
        example = self.initial(torch.Generator().manual_seed(0), self.chains)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = make_fx(batched)(example)
                trace: Any = torch.jit.trace  # untyped in torch
                traced = trace(graph, (example,), check_trace=False)
        except Exception as e:  # any failure to trace: the model runs through Pyro
            self.note = f"compiling the potential failed ({_headline(e, 160)}); ran through Pyro"
            log.info("potential: %s", self.note)
            return
        self._graph, self.compiler, self._fx = traced, "torch.jit", graph
        generator = torch.Generator().manual_seed(1)
        for _ in range(2):
            z = self.initial(generator, self.chains)
            try:
                pe, grad = self._run_graph(z)
            except Exception as e:
                self.note = f"the compiled potential failed ({_headline(e, 160)}); ran through Pyro"
                break
            ref_pe, ref_grad = self._eager(z)
            if not (
                torch.allclose(pe, ref_pe, rtol=_CHECK_RTOL, atol=_CHECK_ATOL, equal_nan=True)
                and torch.allclose(grad, ref_grad, rtol=_CHECK_RTOL, atol=_CHECK_ATOL,
                                   equal_nan=True)
            ):  # fmt: skip
                self.note = (
                    "the compiled potential disagreed with the model at a random point (does the"
                    " model draw random numbers outside pyro.sample?); ran through Pyro"
                )
                break
        else:
            self.compiled = True
            return
        log.info("potential: %s", self.note)
        self._graph, self.compiler = None, ""

    def leaf(self, inductor: bool = False, slots: int = 9) -> LeafFn | None:
        """The sampler's leaf step (inference.nuts_leaf.leaf_core) with this potential inside,
        recorded as one graph and run by torch.jit, or compiled to C++ by torch's inductor
        (`inductor`: a compiler on PATH, seconds to build, then a fraction of the time per
        step); checked against the plain step at random points. None when the potential is
        not compiled or the leaf fails to compile (`note` says why). `slots`: the sampler's
        checkpoint slots (inference.nuts_leaf.checkpoint_count of its maximum tree depth)."""
        if not self.compiled or self._fx is None:
            return None
        from torch.fx.experimental.proxy_tensor import make_fx

        graph = self._fx

        def grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            g, pe = graph(z)
            return pe, g

        def fn(ez: _T, er: _T, kick: _T, step_im: _T, half: _T, im: _T, h0: _T, b: _T,
               sz: _T, spe: _T, sg: _T, sub_lw: _T, log_u: _T, not_built: _T, sub_sum: _T,
               ck_base: _T, ck_v: _T, store: _T, check: _T,
               ) -> tuple[_T, ...]:  # fmt: skip
            return leaf_core(grad, ez, er, kick, step_im, half, im, h0, b, sz, spe, sg, sub_lw,
                             log_u, not_built, sub_sum, ck_base, ck_v, store, check)  # fmt: skip

        generator = torch.Generator().manual_seed(3)
        # An even leaf (it stores a checkpoint), then odd ones (they check one and two).
        examples = [
            self._leaf_example(generator, slots, n) for n in ((2, 1, 3) if slots > 1 else (0, 1, 1))
        ]
        what = "inductor" if inductor else "torch.jit"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = make_fx(fn)(*examples[0])
                compiled: Any
                if inductor:
                    import torch._inductor.config as config
                    from torch._inductor.compile_fx import compile_fx

                    config.compile_threads = 1  # no pool of compiler processes in the sandbox
                    # A precompiled header is a ~150 MB file: past the sandbox's file size
                    # limit (KILN_SANDBOX_FILE_MB), and the cache it would serve is the job's.
                    config.cpp_cache_precompile_headers = False
                    compiled = compile_fx(gm, list(examples[0]))
                else:
                    trace: Any = torch.jit.trace  # untyped in torch
                    compiled = trace(gm, examples[0], check_trace=False)
            for example in examples[1:]:
                got = compiled(*example)
                want = leaf_core(self.grad_fn, *example)
                for i, (g, w) in enumerate(zip(got, want, strict=True)):
                    if not _agree(g, w):
                        raise ValueError(
                            f"the compiled leaf's output {i} disagreed with the plain step's"
                        )
        except Exception as e:
            self.note = f"compiling the sampler's step ({what}) failed ({_headline(e, 160)})"
            log.info("potential: %s", self.note)
            return None
        self.compiler = what

        def leaf(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with torch.no_grad():  # a model's own module weights may require grad
                return cast(tuple[torch.Tensor, ...], compiled(*args))

        return leaf

    def _leaf_example(
        self, generator: torch.Generator, slots: int, n: int
    ) -> tuple[torch.Tensor, ...]:
        c, d = self.chains, self.dim

        def rows(scale: float) -> torch.Tensor:
            return torch.randn(c, d, generator=generator, dtype=torch.float64) * scale

        def column(value: float) -> torch.Tensor:
            return torch.full((c, 1), value, dtype=torch.float64)

        z = self.initial(generator, c)
        pe, g = self.grad_fn(z)
        # Distinct tensors each (a tracer binds one tensor passed twice to one input).
        example = (z, rows(1.0), rows(0.01), column(0.05) * torch.ones(c, d, dtype=torch.float64),
                   column(0.05), torch.ones(c, d, dtype=torch.float64), pe[:, None] + 5.0,
                   torch.ones((c, 1), dtype=torch.bool), z + rows(0.1), pe[:, None] + 1.0, g,
                   column(-math.inf), column(-0.7), column(math.nan), rows(1.0),
                   torch.randn(slots, c, d, generator=generator, dtype=torch.float64),
                   torch.randn(slots, c, d, generator=generator, dtype=torch.float64),
                   *slot_masks(slots, n))  # fmt: skip
        return tuple(t.clone() for t in example)

    def _run_graph(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._graph is not None
        grad, pe = self._graph(z)
        return pe, grad

    def grad_fn(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(potential (chains,), gradient (chains, dim)) at z (chains, dim)."""
        if self._graph is None or z.shape[0] != self.chains:
            return self._eager(z)
        try:
            with torch.no_grad():
                return self._run_graph(z)
        except RuntimeError:
            return self._eager(z)  # one chain's failure: find which, that one is infinite

    # ---- positions ----
    def initial(self, generator: torch.Generator, chains: int) -> torch.Tensor:
        """Uniform (-2, 2) unconstrained positions, as Pyro's init_to_uniform."""
        u = torch.rand(chains, self.dim, generator=generator, dtype=torch.float64)
        return (2 * u - 1) * _INIT_RADIUS

    def find_initial(self, generators: list[torch.Generator]) -> torch.Tensor:
        """One position per generator where the potential and its gradient are finite."""
        rows = []
        for chain, generator in enumerate(generators):
            for _ in range(_INIT_TRIES):
                z = self.initial(generator, 1)
                pe, grad = self._eager(z)
                if torch.isfinite(pe).all() and torch.isfinite(grad).all():
                    rows.append(z[0])
                    break
            else:
                raise ModelError(
                    f"chain {chain}: no starting point with a finite log density in"
                    f" {_INIT_TRIES} tries (uniform in (-2, 2) on the unconstrained scale); check"
                    " the model's priors and data"
                )
        return torch.stack(rows)

    def deterministic(self, z: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The pyro.deterministic sites' values at positions z (n, dim), the model run once
        vectorised over the n draws (torch.func.vmap, in chunks); None when the model cannot
        run that way (the caller then runs it once per draw)."""

        def one(row: torch.Tensor) -> dict[str, torch.Tensor]:
            with pyro.validation_enabled(False):
                trace = poutine.trace(poutine.condition(self.model, data=self.values(row)))
                nodes = trace.get_trace(**self.kwargs).nodes
            return {
                name: torch.as_tensor(site["value"])
                for name, site in nodes.items()
                if site["type"] == "sample" and (site["infer"] or {}).get("_deterministic")
            }

        batched = torch.func.vmap(one)
        chunks: list[dict[str, torch.Tensor]] = []
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for start in range(0, z.shape[0], _REPLAY_CHUNK):
                    chunks.append(batched(z[start : start + _REPLAY_CHUNK]))
        except Exception as e:  # Python control flow on a value, an op vmap lacks...
            log.info("deterministic sites one draw at a time: %s", _headline(e, 160))
            return None
        if not chunks or not chunks[0]:
            return {}
        return {name: torch.cat([c[name] for c in chunks]) for name in chunks[0]}

    def constrain(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Constrained values by site for positions z (n, dim): each (n, *site shape)."""
        n = z.shape[0]
        with torch.no_grad():
            return {
                s.name: s.transform(z[:, s.offset : s.offset + s.size].reshape(n, *s.shape))
                for s in self.sites
            }


def _agree(got: torch.Tensor, want: torch.Tensor) -> bool:
    """A compiled output equals the plain one up to rounding: the same NaNs and infinities,
    finite values within 1e-7 of the output's largest (a compiler may fuse or reorder a
    difference of large terms, so an element-wise relative test is too strict there)."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if not got.is_floating_point():
        return bool(torch.equal(got, want))
    finite = torch.isfinite(want)
    if not torch.equal(finite, torch.isfinite(got)):
        return False
    if not torch.equal(got[~finite].nan_to_num(), want[~finite].nan_to_num()):
        return False  # NaN where NaN, the same infinities
    if not finite.any():
        return True
    scale = float(want[finite].abs().max())
    return float((got[finite] - want[finite]).abs().max()) <= 1e-7 * scale + 1e-9


def _numerical(e: BaseException) -> bool:
    """An error of the linear algebra at an extreme point, not a bug in the model."""
    text = str(e).lower()
    return any(k in text for k in ("cholesky", "singular", "positive-definite",
                                   "positive definite", "not invertible", "nan"))  # fmt: skip

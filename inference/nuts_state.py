"""The NUTS/HMC sampler's chain state and its lossless encoding to named numpy arrays."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# z (C, D) float64 unconstrained positions -> (potential energy (C,), its gradient (C, D)),
# float64, fresh tensors (the sampler keeps them); non-finite values reject that point. Row i
# must depend on z's row i only (for a chain's draws not to depend on its batch).
GradFn = Callable[[Tensor], tuple[Tensor, Tensor]]

FORMAT_VERSION = 1
# The byte size of a CPU torch.Generator's state (mt19937 plus the cached normal sample).
RNG_STATE_BYTES = int(torch.Generator(device="cpu").get_state().numel())
# decode_state reads untrusted arrays: these bound what it accepts before it copies anything.
MAX_CHAINS = 1 << 16
MAX_DIM = 1 << 24
MAX_ELEMENTS = 1 << 26  # C * D: 512 MiB per (C, D) float64 array
MAX_COUNT = 1 << 53  # iteration and the adaptation counters
MAX_WINDOWS = 64

_ROWS = ("z", "grad", "inv_mass", "welford_mean", "welford_m2")  # (C, D) float64
_VECS = ("pe", "step_size", "da_mu", "da_log_step_bar", "da_h_bar")  # (C,) float64
_INTS = ("iteration", "da_count", "welford_count", "mass_window")  # () int64
NAMES = frozenset(("format_version", "rng", *_ROWS, *_VECS, *_INTS))


@dataclass(eq=False)
class ChainState:
    """C chains at once; every tensor is float64 on the CPU with the chain as its first axis.

    `iteration` counts the iterations done (warmup and sampling). Dual averaging keeps
    mu, log_step_bar (x-bar) and h_bar per chain and one counter; the mass adaptation keeps a
    Welford accumulator (count shared, mean and m2 per chain) and `mass_window`, the number of
    slow windows closed so far. `rng` holds one torch.Generator state (uint8) per chain.
    """

    iteration: int
    z: Tensor
    pe: Tensor
    grad: Tensor
    step_size: Tensor
    inv_mass: Tensor
    da_mu: Tensor
    da_log_step_bar: Tensor
    da_h_bar: Tensor
    da_count: int
    welford_count: int
    welford_mean: Tensor
    welford_m2: Tensor
    mass_window: int
    rng: list[Tensor]

    @property
    def num_chains(self) -> int:
        return int(self.z.shape[0])

    @property
    def dim(self) -> int:
        return int(self.z.shape[1])


def generators(state: ChainState) -> list[torch.Generator]:
    """One CPU generator per chain, set to the state's RNG states (the state is not changed)."""
    gens = []
    for rng in state.rng:
        g = torch.Generator(device="cpu")
        g.set_state(rng)
        gens.append(g)
    return gens


def generator_states(gens: Sequence[torch.Generator]) -> list[Tensor]:
    return [g.get_state() for g in gens]


def encode_state(state: ChainState) -> dict[str, np.ndarray]:
    """Named numpy arrays (no objects, no pickle) that decode_state turns back into `state`."""
    out: dict[str, np.ndarray] = {"format_version": np.array(FORMAT_VERSION, dtype=np.int64)}
    for name in _INTS:
        out[name] = np.array(int(getattr(state, name)), dtype=np.int64)
    for name in (*_ROWS, *_VECS):
        t: Tensor = getattr(state, name)
        out[name] = t.detach().cpu().to(torch.float64).contiguous().numpy().copy()
    out["rng"] = np.stack([r.detach().cpu().numpy() for r in state.rng]).astype(np.uint8)
    return out


def _array(
    arrays: Mapping[str, np.ndarray], name: str, dtype: type, shape: tuple[int, ...]
) -> np.ndarray:
    a = arrays[name]
    if not isinstance(a, np.ndarray):
        raise ValueError(f"state array {name!r} is a {type(a).__name__}, not a numpy array")
    if a.dtype != np.dtype(dtype):
        raise ValueError(f"state array {name!r} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    if a.shape != shape:
        raise ValueError(f"state array {name!r} has shape {a.shape}, expected {shape}")
    return a


def _int(arrays: Mapping[str, np.ndarray], name: str, high: int) -> int:
    value = int(_array(arrays, name, np.int64, ()))
    if not 0 <= value <= high:
        raise ValueError(f"state value {name!r} = {value} is out of range [0, {high}]")
    return value


def _tensor(a: np.ndarray, name: str, positive: bool = False) -> Tensor:
    t = torch.from_numpy(np.array(a, dtype=np.float64, order="C", copy=True))
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"state array {name!r} has non-finite values")
    if positive and not bool((t > 0).all()):
        raise ValueError(f"state array {name!r} must be positive")
    return t


def decode_state(arrays: Mapping[str, np.ndarray]) -> ChainState:
    """The ChainState encoded in `arrays`; ValueError for anything inconsistent.

    The arrays may come from untrusted bytes: names, dtypes, ranks and shapes are checked
    (and sizes bounded) before any array is copied, then the values (finite, positive where
    they must be, valid generator states).
    """
    if not isinstance(arrays, Mapping):
        raise ValueError("a state is a mapping of names to numpy arrays")
    names = set(arrays.keys())
    if missing := NAMES - names:
        raise ValueError(f"state arrays missing: {sorted(missing)}")
    if extra := names - NAMES:
        raise ValueError(f"unknown state arrays: {sorted(map(str, extra))}")
    for name in NAMES:
        if not isinstance(arrays[name], np.ndarray):
            raise ValueError(f"state array {name!r} is a {type(arrays[name]).__name__}, not numpy")
    version = int(_array(arrays, "format_version", np.int64, ()))
    if version != FORMAT_VERSION:
        raise ValueError(f"state format version {version}, expected {FORMAT_VERSION}")
    z_shape = getattr(arrays["z"], "shape", None)
    if not isinstance(z_shape, tuple) or len(z_shape) != 2:
        raise ValueError("state array 'z' must be 2-dimensional (chains, dimensions)")
    c, d = int(z_shape[0]), int(z_shape[1])
    if not (1 <= c <= MAX_CHAINS and 1 <= d <= MAX_DIM and c * d <= MAX_ELEMENTS):
        raise ValueError(f"state of {c} chains x {d} dimensions is empty or too large")
    rows = {n: _array(arrays, n, np.float64, (c, d)) for n in _ROWS}
    vecs = {n: _array(arrays, n, np.float64, (c,)) for n in _VECS}
    rng = _array(arrays, "rng", np.uint8, (c, RNG_STATE_BYTES))
    iteration = _int(arrays, "iteration", MAX_COUNT)
    ints = {n: _int(arrays, n, iteration) for n in ("da_count", "welford_count")}
    mass_window = _int(arrays, "mass_window", MAX_WINDOWS)
    tensors = {n: _tensor(a, n, positive=n in ("inv_mass", "step_size")) for n, a in rows.items()}
    tensors.update({n: _tensor(a, n, positive=n == "step_size") for n, a in vecs.items()})
    if not bool((tensors["welford_m2"] >= 0).all()):
        raise ValueError("state array 'welford_m2' must be non-negative")
    states = []
    for i in range(c):
        s = torch.from_numpy(np.array(rng[i], dtype=np.uint8, copy=True))
        try:
            torch.Generator(device="cpu").set_state(s)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"state array 'rng' row {i} is not a generator state: {e}") from e
        states.append(s)
    return ChainState(
        iteration=iteration,
        z=tensors["z"],
        pe=tensors["pe"],
        grad=tensors["grad"],
        step_size=tensors["step_size"],
        inv_mass=tensors["inv_mass"],
        da_mu=tensors["da_mu"],
        da_log_step_bar=tensors["da_log_step_bar"],
        da_h_bar=tensors["da_h_bar"],
        da_count=ints["da_count"],
        welford_count=ints["welford_count"],
        welford_mean=tensors["welford_mean"],
        welford_m2=tensors["welford_m2"],
        mass_window=mass_window,
        rng=states,
    )


def select_chains(state: ChainState, index: Sequence[int]) -> ChainState:
    """The sub-batch of chains `index` (distinct, in that order), copied."""
    c = state.num_chains
    idx = [int(i) for i in index]
    if not idx or len(set(idx)) != len(idx) or not all(0 <= i < c for i in idx):
        raise ValueError(f"chain index {idx} must be distinct chains in [0, {c})")
    sel = torch.tensor(idx, dtype=torch.int64)

    def take(t: Tensor) -> Tensor:
        return t.index_select(0, sel).contiguous()

    return ChainState(
        iteration=state.iteration,
        z=take(state.z),
        pe=take(state.pe),
        grad=take(state.grad),
        step_size=take(state.step_size),
        inv_mass=take(state.inv_mass),
        da_mu=take(state.da_mu),
        da_log_step_bar=take(state.da_log_step_bar),
        da_h_bar=take(state.da_h_bar),
        da_count=state.da_count,
        welford_count=state.welford_count,
        welford_mean=take(state.welford_mean),
        welford_m2=take(state.welford_m2),
        mass_window=state.mass_window,
        rng=[state.rng[i].clone() for i in idx],
    )

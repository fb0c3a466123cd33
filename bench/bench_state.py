"""Stored state: the pickle-free codec (named arrays + JSON) against torch.save/torch.load of
the same param store, for a rugged fit's guide and for a checkpoint (param store, Adam state,
RNG state). Prints bytes and microseconds per write and read, and the ratios, side by side.

    .venv/bin/python bench/bench_state.py
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import pyro
import pyro.infer
import pyro.util
import torch

from inference.checkpoint import capture, load
from inference.guides import make_guide
from inference.models.linreg import LinReg
from inference.state import LEGACY_SAFE_GLOBALS, dump_state, read_state
from inference.svi import make_optim

REPEATS = 300


def per_call_us(work: Callable[[], Any]) -> float:
    work()
    started = time.perf_counter()
    for _ in range(REPEATS):
        work()
    return (time.perf_counter() - started) / REPEATS * 1e6


def torch_bytes(tree: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(tree, buffer)
    return buffer.getvalue()


def main() -> None:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    terms = ("Intercept", "cont_africa", "rugged", "cont_africa:rugged")
    model = LinReg(terms, None)
    X, y = torch.randn(170, 4), torch.randn(170)
    guide = make_guide("AutoMultivariateNormal", model)
    optim = make_optim("Adam", 0.02)
    svi = pyro.infer.SVI(model, guide, optim, pyro.infer.Trace_ELBO())
    for _ in range(5):  # so the checkpoint holds Adam's moments too
        svi.step(X, y=y)
    store = pyro.get_param_store().get_state()
    legacy = torch_bytes({"format": "pyro-param-store/torch.save/v1", "param_store": store})

    def legacy_read() -> Any:
        with torch.serialization.safe_globals(LEGACY_SAFE_GLOBALS):
            return torch.load(io.BytesIO(legacy), weights_only=True)

    ours = dump_state()
    rows = [
        ("fitted state write", per_call_us(dump_state),
         per_call_us(lambda: torch_bytes({"param_store": store})), len(ours), len(legacy)),
        ("fitted state read", per_call_us(lambda: read_state(ours)), per_call_us(legacy_read),
         len(ours), len(legacy)),
    ]  # fmt: skip
    checkpoint = capture(10, optim)
    old = torch_bytes({"param_store": store, "optim": optim.get_state(),
                       "rng": pyro.util.get_rng_state()})  # fmt: skip
    rows += [
        ("checkpoint write", per_call_us(lambda: capture(10, optim)),
         per_call_us(lambda: torch_bytes({"param_store": store, "optim": optim.get_state(),
                                          "rng": pyro.util.get_rng_state()})),
         len(checkpoint), len(old)),
        ("checkpoint read", per_call_us(lambda: load(checkpoint)),
         per_call_us(lambda: torch.load(io.BytesIO(old), weights_only=False)),
         len(checkpoint), len(old)),
    ]  # fmt: skip
    print(f"{'':20} {'codec us':>10} {'torch us':>10} {'ratio':>6} {'codec B':>8} {'torch B':>8}")
    for name, ours_us, torch_us, ours_b, torch_b in rows:
        print(f"{name:20} {ours_us:10.0f} {torch_us:10.0f} {ours_us / torch_us:6.2f}"
              f" {ours_b:8d} {torch_b:8d}")  # fmt: skip


if __name__ == "__main__":
    main()

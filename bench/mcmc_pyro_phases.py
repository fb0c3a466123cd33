"""One Pyro NUTS chain of a Kiln user model file, set up as a Kiln chain process sets it up
(one torch thread, jit_compile, target_accept 0.8, max tree depth 10), with each phase timed
from inside; prints one JSON line. For bench/bench_mcmc.py: the breakdown Kiln's job record
does not hold.

    .venv/bin/python bench/mcmc_pyro_phases.py MODEL.py DATA.json WARMUP SAMPLES
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()
import importlib.util  # noqa: E402

import pyro  # noqa: E402  (timed: imports are part of a chain process's start)
import pyro.infer.mcmc.nuts as pyro_nuts  # noqa: E402
import pyro.poutine as poutine  # noqa: E402
import torch  # noqa: E402
from pyro.infer import MCMC, NUTS  # noqa: E402

IMPORTED = time.perf_counter()


class Steps:
    """Counts leapfrog steps (Pyro's NUTS calls velocity_verlet once per tree leaf)."""

    def __init__(self) -> None:
        self.count = 0
        self.inner: Callable[..., Any] = pyro_nuts.__dict__["velocity_verlet"]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self.inner(*args, **kwargs)


def main() -> None:
    model_file, data_file, warmup, samples = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:5])
    torch.set_num_threads(1)  # as a Kiln chain: one thread
    pyro.set_rng_seed(0)
    t0 = time.perf_counter()
    found = importlib.util.spec_from_file_location("kiln_bench_model", model_file)
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    dtypes = getattr(module, "DTYPES", {})
    raw = json.loads(Path(data_file).read_text())
    data = {k: torch.tensor(v, dtype=getattr(torch, dtypes.get(k, "float64")))
            if isinstance(v, list) else v for k, v in raw.items()}  # fmt: skip
    options = {"target_accept_prob": 0.8, "max_tree_depth": 10, "ignore_jit_warnings": True}
    t1 = time.perf_counter()
    NUTS(module.model, jit_compile=False, **options).setup(warmup, **data)
    t2 = time.perf_counter()
    steps = Steps()
    pyro_nuts.__dict__["velocity_verlet"] = steps  # counting, not changing
    marks: dict[str, float] = {}
    counts: dict[str, int] = {}

    def hook(kernel: Any, params: Any, stage: str, i: int) -> None:
        now = time.perf_counter()
        marks.setdefault("first", now)
        counts.setdefault("first", steps.count)
        if stage == "Warmup":
            marks["warm_end"], counts["warm_end"] = now, steps.count

    kernel = NUTS(module.model, jit_compile=True, **options)
    mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, hook_fn=hook,
                disable_progbar=True)  # fmt: skip
    t3 = time.perf_counter()
    mcmc.run(**data)
    t4 = time.perf_counter()
    latent = mcmc.get_samples()
    for i in range(samples):  # Kiln replays the model per draw for its deterministic sites
        draw = {k: v[i] for k, v in latent.items()}
        with torch.no_grad():
            poutine.trace(poutine.condition(module.model, data=draw)).get_trace(**data)
    t5 = time.perf_counter()
    sample_steps = steps.count - counts["warm_end"]
    print(json.dumps({
        "import_s": IMPORTED - STARTED,  # torch + pyro
        "load_s": t1 - t0,
        "setup_nojit_s": t2 - t1,  # model trace + initial point, no compilation
        # with jit: trace, compile, step-size search, the first draw
        "setup_first_s": marks["first"] - t3,
        "warmup_s": marks["warm_end"] - t3,  # includes setup_first_s
        "sample_s": t4 - marks["warm_end"],
        "replay_s": t5 - t4,
        "warmup_steps": counts["warm_end"],
        "sample_steps": sample_steps,
        "step_ms": (t4 - marks["warm_end"]) / max(sample_steps, 1) * 1000,
        "means": {k: float(v.mean()) for k, v in latent.items() if v.dim() == 1},
    }))  # fmt: skip


if __name__ == "__main__":
    main()

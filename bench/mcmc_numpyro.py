"""One NumPyro NUTS run in this fresh process, for bench/bench_mcmc.py: prints one JSON line of
phase times (imports, warmup with its compilation, sampling), leapfrog steps and posterior means.

    .venv/bin/python bench/mcmc_numpyro.py MODEL CHAIN_METHOD CHAINS WARMUP SAMPLES
    .venv/bin/python bench/mcmc_numpyro.py --check     # the twins' log densities vs Pyro's

MODEL is eight_schools or gp_poisson (bench/models/numpyro_twins.py). For chain_method
"parallel" the parent sets XLA_FLAGS=--xla_force_host_platform_device_count=CHAINS.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).with_name("models")))

import jax  # noqa: E402  (timed: the imports are part of what this measures)
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

numpyro.enable_x64()  # Pyro runs the same models in float64
from numpyro_twins import MODELS, load_data  # noqa: E402

IMPORTED = time.perf_counter()


def run(name: str, chain_method: str, chains: int, warmup: int, samples: int) -> dict[str, Any]:
    """mcmc.run as a user calls it (compilation, warmup and sampling), then the compiled
    gradient of the potential alone, called 2000 times (a leapfrog step's core)."""
    data = load_data(name)
    kernel = NUTS(MODELS[name], target_accept_prob=0.8, max_tree_depth=10)
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, num_chains=chains,
                chain_method=chain_method, progress_bar=False)  # fmt: skip
    fields = ("num_steps", "diverging")
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(0), **data, extra_fields=fields)
    draws = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
    extra = mcmc.get_extra_fields()
    rhat = numpyro.diagnostics.summary(mcmc.get_samples(group_by_chain=True))
    t1 = time.perf_counter()
    init = initialize_model(jax.random.PRNGKey(1), MODELS[name], model_kwargs=data)
    grad = jax.jit(jax.value_and_grad(init.potential_fn))
    z = init.param_info.z
    jax.block_until_ready(grad(z))
    t2 = time.perf_counter()
    for _ in range(2000):
        out = grad(z)
    jax.block_until_ready(out)
    t3 = time.perf_counter()
    return {
        "import_s": IMPORTED - STARTED,
        "run_s": t1 - t0,  # compilation + warmup + sampling (+ draws to numpy, R-hat)
        "sample_steps": int(np.asarray(extra["num_steps"]).sum()),
        "grad_ms": (t3 - t2) / 2000 * 1000,  # one compiled value-and-gradient, dispatch included
        "divergences": int(np.asarray(extra["diverging"]).sum()),
        "max_r_hat": max(float(np.nanmax(s["r_hat"])) for s in rhat.values()),
        "means": {k: float(v.mean()) for k, v in draws.items() if v.ndim == 1},
        "devices": jax.local_device_count(),
    }


def check() -> dict[str, Any]:
    """Max |log p_numpyro - log p_pyro| over 5 prior draws of each Pyro model (the same values
    at every latent site): 0 up to rounding when the twins are the same model."""
    import importlib.util

    import pyro.poutine as poutine
    import torch
    from numpyro.handlers import seed, trace
    from numpyro.infer.util import log_density
    from numpyro_twins import MODEL_FILES

    torch.manual_seed(0)
    out: dict[str, Any] = {}
    for name, twin in MODELS.items():
        found = importlib.util.spec_from_file_location(f"kiln_bench_{name}", MODEL_FILES[name])
        assert found is not None and found.loader is not None
        module = importlib.util.module_from_spec(found)
        found.loader.exec_module(module)
        jdata = load_data(name)
        latent = [k for k, s in trace(seed(twin, 0)).get_trace(**jdata).items()
                  if s["type"] == "sample" and not s["is_observed"]]  # fmt: skip
        raw = json.loads(MODEL_FILES[name].with_suffix(".json").read_text())
        tdata = {k: v if isinstance(v, int) else torch.tensor(v, dtype=torch.float64)
                 for k, v in raw.items()}  # fmt: skip
        worst = 0.0
        for _ in range(5):
            prior = poutine.trace(module.model).get_trace(**tdata)  # a prior draw: a point
            point = {k: prior.nodes[k]["value"] for k in latent}
            pyro_lp = float(poutine.trace(poutine.condition(module.model, data=point))
                            .get_trace(**tdata).log_prob_sum())  # fmt: skip
            jpoint = {k: np.asarray(v.detach().numpy()) for k, v in point.items()}
            np_lp, _ = log_density(twin, (), jdata, jpoint)
            gap = abs(float(np_lp) - pyro_lp)
            worst = max(worst, gap if np.isfinite(gap) else float("inf"))
        out[name] = worst
    return out


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        print(json.dumps(check()))
        return
    name, chain_method, chains, warmup, samples = sys.argv[1:6]
    print(json.dumps(run(name, chain_method, int(chains), int(warmup), int(samples))))


if __name__ == "__main__":
    main()

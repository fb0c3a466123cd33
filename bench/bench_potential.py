"""Benchmark: one gradient of a model's potential through Pyro against Kiln's compiled
potential (inference.potential), for 1 and 4 chains, side by side in one run (issue 20).

    .venv/bin/python bench/bench_potential.py [--calls 2000]

Models: eight schools (examples/eight_schools.py) and the latent GP with a Poisson likelihood
(bench/models/gp_poisson.py). One torch thread. Prints ms per call and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "eight_schools": ("examples/eight_schools.py", "examples/eight_schools.json"),
    "gp_poisson": ("bench/models/gp_poisson.py", "bench/models/gp_poisson.json"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    import torch

    from inference.potential import Potential
    from inference.usercode import get_function, load_module, to_tensors

    torch.set_num_threads(1)
    print(f"{'model':<14} {'chains':>6} {'pyro ms':>9} {'compiled ms':>12} {'ratio':>7}"
          f" {'build s':>8}")  # fmt: skip
    for name, (path, data_path) in MODELS.items():
        source = (ROOT / path).read_text()
        module = load_module(source, path)
        model = get_function(module, "model", path)
        data = to_tensors(json.loads((ROOT / data_path).read_text()), "cpu",
                          getattr(module, "DTYPES", None))  # fmt: skip
        for chains in (1, 4):
            started = time.perf_counter()
            potential = Potential(model, data, chains, filename=path)
            built = time.perf_counter() - started
            assert potential.compiled, potential.note
            z = potential.find_initial([torch.Generator().manual_seed(c) for c in range(chains)])
            timings = []
            for f, calls in ((potential._eager, max(args.calls // 10, 10)),
                             (potential.grad_fn, args.calls)):  # fmt: skip
                f(z)
                t = time.perf_counter()
                for _ in range(calls):
                    f(z)
                timings.append((time.perf_counter() - t) / calls * 1e3)
            eager, compiled = timings
            print(f"{name:<14} {chains:>6} {eager:>9.3f} {compiled:>12.3f}"
                  f" {eager / compiled:>6.1f}x {built:>8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Benchmark: K bootstrap rugged fits as one vectorised program (fit_many) against single fits
(prepare_fit + run_svi) one after another. Prints fits/second, the ratio and how far member i of
the batch is from the same resample fitted alone.

    .venv/bin/python bench/bench_vectorized.py [--members 256] [--steps 1000] [--sequential 8]
        [--threads 1] [--device cpu|cuda] [--scale 1024,4096,...]

Only `--sequential` single fits are run; their time is extrapolated to K members (printed as
such). Both sides run on `--device`. `--scale` also times the vectorised batch at other member
counts (fits/s as the batch grows; where a GPU pays off). Pure inference: no database, broker
or worker.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyro
import torch

from inference.fit import prepare_fit
from inference.svi import run_svi
from inference.vectorized import ManyResult, fit_many
from kiln.tables import build_design, read_csv_bytes

ROOT = Path(__file__).resolve().parents[1]
RUGGED = ROOT.parent / "shared" / "data" / "rugged_data.csv"
FORMULA = "log(rgdppc_2000) ~ cont_africa * rugged"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--sequential", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for both sides")
    parser.add_argument("--scale", default="", help="more member counts, vectorised only")
    a = parser.parse_args()
    # On a shared 2-core machine two intra-op threads made the batch 18x slower (spin-waits).
    torch.set_num_threads(a.threads)

    frame = read_csv_bytes(RUGGED.read_bytes(), RUGGED.name)
    design = build_design(frame, FORMULA)
    rows = len(design.y)
    rng = np.random.default_rng(a.seed)
    counts = rng.multinomial(rows, np.full(rows, 1 / rows), size=a.members)
    seeds = list(range(a.seed, a.seed + a.members))

    def vectorised(members: int, counts: np.ndarray, seeds: list[int]) -> tuple[ManyResult, float]:
        started = time.perf_counter()
        batch = fit_many(design.X, design.y, terms=design.terms, members=members,
                         weights=counts, seeds=seeds, steps=a.steps, lr=a.lr,
                         device=a.device)  # fmt: skip
        return batch, time.perf_counter() - started

    batch, vec_s = vectorised(a.members, counts, seeds)

    n = min(a.sequential, a.members)
    seq_times, gaps = [], []
    for k in range(n):
        # The same resample as copied rows: member k's counts repeat the used rows.
        resample = frame.iloc[design.row_index[np.repeat(np.arange(rows), counts[k])]]
        started = time.perf_counter()
        p = prepare_fit("linreg", resample, formula=FORMULA, guide="AutoNormal", seed=seeds[k],
                        device=a.device)  # fmt: skip
        for _ in run_svi(p.model, p.guide, p.args, p.kwargs, steps=a.steps, lr=a.lr):
            pass
        seq_times.append(time.perf_counter() - started)
        with torch.no_grad():
            draws = pyro.infer.Predictive(p.model, guide=p.guide, num_samples=1000,
                                          return_sites=list(p.latent_sites))(*p.args)  # fmt: skip
        ours = batch.members[k].params
        gaps.append(max(abs(ours[s]["mean"] - float(v.mean())) for s, v in draws.items()))
    scaled = []
    for members in [int(m) for m in a.scale.split(",") if m]:
        more = rng.multinomial(rows, np.full(rows, 1 / rows), size=members)
        big, seconds = vectorised(members, more, list(range(members)))
        scaled.append((members, seconds, members - len(big.ok)))

    per_fit = sum(seq_times) / n
    seq_total = per_fit * a.members
    failed = a.members - len(batch.ok)
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(f"device: {where}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"rows {rows}, steps {a.steps}, "
          f"lr {a.lr}, AutoNormal, bootstrap resamples")  # fmt: skip
    print(f"vectorised : {a.members} fits in {vec_s:.2f} s = {a.members / vec_s:.2f} fits/s "
          f"({failed} failed)")  # fmt: skip
    print(
        f"sequential : {n} fits in {sum(seq_times):.2f} s ({per_fit:.2f} s/fit) = "
        f"{1 / per_fit:.3f} fits/s; extrapolated to {a.members} fits: {seq_total:.0f} s"
    )
    print(f"ratio      : {seq_total / vec_s:.1f}x throughput (vectorised / sequential)")
    print(
        f"agreement  : max |posterior mean difference| per member, vectorised vs alone, "
        f"members 0..{n - 1}: {', '.join(f'{g:.3f}' for g in gaps)} (max {max(gaps):.3f})"
    )
    for members, seconds, failed in scaled:
        rate = members / seconds
        print(f"vectorised : {members} fits in {seconds:.2f} s = {rate:.1f} fits/s"
              f" ({failed} failed;"
              f" {rate * per_fit:.0f}x the sequential rate)")  # fmt: skip


if __name__ == "__main__":
    main()

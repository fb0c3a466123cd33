"""Benchmark: storing arrays as zlib at level 6 (what db/codec.py always did) against the
probe that stores an incompressible array raw (db/codec.encode_array now), side by side.

    .venv/bin/python bench/bench_codec.py [--mb 80]

Arrays: float64 log-likelihood values (normal noise, as an MCMC job's `log_likelihood:y`
rows are: 1000 draws x 10,000 data points is 80 MB, inference.loglik's cap), float64 draws
of a constant (compressible), int64 tree depths (compressible). Prints the stored size,
encode and decode seconds of each, and the ratio of the times.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db import codec  # noqa: E402
from db.codec import decode_array, encode_array  # noqa: E402


def zlib_only(array: np.ndarray) -> bytes:
    """encode_array as it was: the probe off, so the body is always zlib at level 6."""
    probe = codec.PROBE_BYTES
    codec.PROBE_BYTES = sys.maxsize  # no array is this large: none is probed
    try:
        return encode_array(array)
    finally:
        codec.PROBE_BYTES = probe


def timed(f: Callable[[Any], Any], arg: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = f(arg)
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=80, help="size of each array [80]")
    args = parser.parse_args()
    n = args.mb * 2**20 // 8
    rng = np.random.default_rng(0)
    arrays = {
        "log-likelihood (float64 noise)": rng.normal(-1.0, 0.3, size=(1000, n // 1000)),
        "a constant site (float64)": np.full((1000, n // 1000), 0.25),
        "tree depths (int64)": rng.integers(1, 6, size=(1000, n // 1000)),
    }
    print(f"{'array':<32} {'how':<10} {'stored MB':>10} {'encode s':>9} {'decode s':>9}")
    for name, array in arrays.items():
        rows = []
        for how, encode in (("zlib 6", zlib_only), ("probe", encode_array)):
            enc_s, content = timed(encode, array)
            assert isinstance(content, bytes)
            dec_s, back = timed(decode_array, content)
            np.testing.assert_array_equal(back, array)
            rows.append((enc_s, dec_s))
            print(f"{name:<32} {how:<10} {len(content) / 2**20:>10.1f} {enc_s:>9.3f}"
                  f" {dec_s:>9.3f}")  # fmt: skip
        (e0, d0), (e1, d1) = rows
        print(f"{'':<32} {'ratio':<10} {'':>10} {e0 / e1:>8.1f}x {d0 / d1:>8.1f}x")


if __name__ == "__main__":
    main()

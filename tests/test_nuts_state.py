"""A sampler checkpoint read back (inference.nuts.decode_state): arrays of the wrong name,
dtype, shape, range or size, or non-finite values, are refused with a ValueError."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.nuts import SamplerConfig, decode_state, encode_state, init_state
from inference.nuts_state import RNG_STATE_BYTES
from tests.test_nuts import F64, MEAN, SCALES, diagonal


def test_decode_state_refuses_bad_arrays() -> None:
    grad_fn = diagonal(MEAN[:2], SCALES[:2])
    config = SamplerConfig("nuts", warmup=10)
    good = encode_state(init_state(grad_fn, torch.zeros(2, 2, dtype=F64), config, [1, 2]))
    decode_state(good)

    def bad(**changes: object) -> dict[str, object]:
        arrays: dict[str, object] = dict(good)
        arrays.update(changes)
        return {k: v for k, v in arrays.items() if v is not None}

    huge = np.broadcast_to(np.zeros((), dtype=np.float64), (1 << 20, 1 << 20))  # no memory
    cases: list[tuple[dict[str, object], str]] = [
        (bad(z=None), "missing"),
        (bad(extra=np.zeros(1)), "unknown"),
        (bad(z=good["z"].astype(np.float32)), "dtype"),
        (bad(z=good["z"].astype(">f8")), "dtype"),
        (bad(pe=np.zeros(3)), "shape"),
        (bad(inv_mass=np.ones((2, 3))), "shape"),
        (bad(rng=good["rng"][:, :100]), "shape"),
        (bad(iteration=np.array([0])), "shape"),
        (bad(iteration=np.array(-1)), "range"),
        (bad(da_count=np.array(5)), "range"),  # more dual-averaging steps than iterations
        (bad(z=huge), "too large"),
        (bad(grad=huge), "shape"),
        (bad(z=np.zeros((0, 2))), "too large"),
        (bad(z=[[0.0, 0.0], [0.0, 0.0]]), "numpy"),
        (bad(step_size=np.array([0.1, -1.0])), "positive"),
        (bad(z=np.array([[0.0, math.nan], [0.0, 0.0]])), "finite"),
        (bad(format_version=np.array(2)), "version"),
        (bad(z=good["z"].astype(object)), "dtype"),
    ]
    for arrays, message in cases:
        with pytest.raises(ValueError, match=message):
            decode_state(arrays)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        decode_state(bad(rng=np.zeros((2, RNG_STATE_BYTES), dtype=np.uint8)))  # type: ignore[arg-type]

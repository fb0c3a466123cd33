"""Resumable SVI state <-> bytes: param store, optimiser state, RNG state and the step reached.

A checkpoint taken after step k-1 resumes at step k in another process and, with the same
seed, follows the uninterrupted run (bitwise with Trace_ELBO; up to float noise when traced).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.optim
import pyro.util
import torch
from pyro.params.param_store import StateDict

CHECKPOINT_FORMAT = "kiln-svi-checkpoint/torch.save/v1"


@dataclass(frozen=True, slots=True)
class Resume:
    """What a checkpoint holds, loaded: the step to take next and the states to put back."""

    step: int
    param_store: StateDict
    optim: dict[str, Any]
    rng: dict[str, Any]


def capture(step: int, optim: pyro.optim.PyroOptim) -> bytes:
    """Everything needed to go on at `step` (the next step to take), as bytes."""
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "param_store": pyro.get_param_store().get_state(),
            "optim": optim.get_state(),
            "rng": pyro.util.get_rng_state(),
        },
        buffer,
    )
    return buffer.getvalue()


def load(content: bytes, map_location: str = "cpu") -> Resume:
    """Read bytes from capture().

    weights_only=False: the state holds constraint objects and numpy's RNG state; the bytes
    come from Kiln's own database, written by a Kiln worker, never from the broker or a user.
    """
    state: dict[str, Any] = torch.load(
        io.BytesIO(content), map_location=map_location, weights_only=False
    )
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unknown checkpoint format {state.get('format')!r}")
    return Resume(state["step"], state["param_store"], state["optim"], state["rng"])

"""Resumable SVI state <-> bytes: param store, optimiser state, RNG state and the step reached.

A checkpoint taken after step k-1 resumes at step k in another process and, with the same
seed, follows the uninterrupted run (bitwise with Trace_ELBO; up to float noise when traced).
Stored as named arrays plus JSON (inference.statecodec), never as a pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyro
import pyro.optim
import pyro.util
from pyro.params.param_store import StateDict

from inference.statecodec import StateFormatError, decode, encode

CHECKPOINT_FORMAT = "kiln-svi-checkpoint/npz-json/v2"


@dataclass(frozen=True, slots=True)
class Resume:
    """What a checkpoint holds, loaded: the step to take next and the states to put back."""

    step: int
    param_store: StateDict
    optim: dict[str, Any]
    rng: dict[str, Any]


def capture(step: int, optim: pyro.optim.PyroOptim) -> bytes:
    """Everything needed to go on at `step` (the next step to take), as bytes."""
    return encode(
        {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "param_store": pyro.get_param_store().get_state(),
            "optim": optim.get_state(),
            "rng": pyro.util.get_rng_state(),
        }
    )


def load(content: bytes, map_location: str = "cpu") -> Resume:
    """Read bytes from capture(). Raises StateFormatError for anything else."""
    state = decode(content, map_location)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise StateFormatError("unknown checkpoint format")
    return Resume(int(state["step"]), state["param_store"], state["optim"], state["rng"])

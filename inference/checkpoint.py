"""Resumable states <-> bytes: a single SVI fit's (param store, optimiser state, RNG state and
the step reached) and a vectorised batch's (inference.vectorized: its parameters, its Adam
moments, RNG state, step and each member's losses and failure so far).

A checkpoint taken after step k-1 resumes at step k in another process and, with the same
seed, follows the uninterrupted run (bitwise with Trace_ELBO; up to float noise when traced).
Stored as named arrays plus JSON (inference.statecodec), never as a pickle; each names its
format, which `format_of` reads without loading the arrays.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.optim
import pyro.util
import torch
from pyro.params.param_store import StateDict

from inference.statecodec import META, StateFormatError, decode, encode, is_encoded

CHECKPOINT_FORMAT = "kiln-svi-checkpoint/npz-json/v2"
BATCH_CHECKPOINT_FORMAT = "kiln-batch-checkpoint/npz-json/v1"


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
    rng = dict(state["rng"])
    if isinstance(rng.get("torch"), torch.Tensor):
        rng["torch"] = rng["torch"].cpu()  # torch.set_rng_state takes a CPU tensor only
    return Resume(int(state["step"]), state["param_store"], state["optim"], rng)


def continuation(parent: bytes, *, step: int, lr: float | None, keep_rng: bool) -> bytes:
    """A checkpoint from which a continued fit starts at `step`, made of its parent's stored
    state: a checkpoint (a cancelled or failed fit: param store, optimiser and RNG state), or
    a fitted state (a succeeded fit: the param store only, so the optimiser starts afresh).

    `lr` replaces the learning rate the optimiser state would put back (torch restores it
    with the state). Without `keep_rng` the RNG state is left out, so the continued fit's own
    seed draws (inference.svi puts back only a stored one).
    """
    from inference.state import read_state

    param_store: Any
    if peek(parent).get("format") == CHECKPOINT_FORMAT:
        saved = load(parent)
        param_store, optim, rng = saved.param_store, saved.optim, saved.rng
    else:
        param_store, optim, rng = read_state(parent), {}, {}
    if lr is not None:
        for per_param in optim.values():
            for group in per_param.get("param_groups", []):
                group["lr"] = lr
    return encode({"format": CHECKPOINT_FORMAT, "step": step, "param_store": param_store,
                   "optim": optim, "rng": rng if keep_rng else {}})  # fmt: skip


@dataclass(frozen=True, slots=True)
class BatchResume:
    """A vectorised batch's checkpoint, loaded: the step to take next, its member count and
    the batch's own state (inference.vectorized puts it back)."""

    step: int
    members: int
    state: dict[str, Any]


def capture_batch(step: int, members: int, state: dict[str, Any]) -> bytes:
    """A vectorised batch's state (tensors, arrays, JSON values) after `step` steps, as bytes."""
    return encode(
        {"format": BATCH_CHECKPOINT_FORMAT, "step": step, "members": members, "batch": state}
    )


def load_batch(content: bytes) -> BatchResume:
    """Read bytes from capture_batch(), tensors on the CPU. Raises StateFormatError."""
    state = decode(content, "cpu")
    if not isinstance(state, dict) or state.get("format") != BATCH_CHECKPOINT_FORMAT:
        raise StateFormatError("not a batch checkpoint")
    return BatchResume(int(state["step"]), int(state["members"]), state["batch"])


def peek(content: bytes) -> dict[str, Any]:
    """A checkpoint's plain top-level fields (format, step, members...), read from its JSON
    alone (no array is loaded); {} for bytes this codec did not write."""
    if not is_encoded(content):
        return {}
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as npz:
            tree = json.loads(npz[META].tobytes().decode())
        pairs = tree["map"] if isinstance(tree, dict) else []
        return {k: v for k, v in pairs if isinstance(k, str) and isinstance(v, str | int | float)}
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError):
        return {}


def format_of(content: bytes) -> str:
    """The format a checkpoint's bytes name (a single fit's when they name none)."""
    found = peek(content).get("format")
    return found if isinstance(found, str) else CHECKPOINT_FORMAT

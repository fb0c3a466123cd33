"""Fitted state <-> bytes: the param store, enough to rebuild the guide in another process."""

from __future__ import annotations

import io
from typing import Any

import pyro
import torch
from numpy.typing import NDArray

STATE_FORMAT = "pyro-param-store/torch.save/v1"


def dump_state() -> bytes:
    """The current param store as bytes. Call right after the fit, before the guide runs again."""
    saved = pyro.get_param_store().get_state()
    return dump_param_state(saved["params"], saved["constraints"])


def dump_param_state(params: dict[str, torch.Tensor], constraints: dict[str, Any]) -> bytes:
    """A param store state built from unconstrained values and their constraints (e.g. one
    member's slice of a vectorised batch), in dump_state()'s format."""
    buffer = io.BytesIO()
    state = {"params": dict(params), "constraints": dict(constraints)}
    torch.save({"format": STATE_FORMAT, "param_store": state}, buffer)
    return buffer.getvalue()


def load_state(content: bytes, map_location: str = "cpu") -> None:
    """Replace the param store with a state from dump_state().

    weights_only=False: Pyro's state holds constraint objects; the bytes come from Kiln's own
    database, written by a Kiln worker, never from the broker or a user.
    """
    state: dict[str, Any] = torch.load(
        io.BytesIO(content), map_location=map_location, weights_only=False
    )
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"unknown fitted-state format {state.get('format')!r}")
    pyro.clear_param_store()
    pyro.get_param_store().set_state(state["param_store"])


def param_values() -> dict[str, NDArray[Any]]:
    """Every parameter in the param store, constrained, as numpy arrays."""
    store = pyro.get_param_store()
    return {name: store[name].detach().cpu().numpy().copy() for name in store.keys()}

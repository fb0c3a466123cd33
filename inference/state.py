"""Fitted state <-> bytes: the param store, enough to rebuild the guide in another process.

Stored as named arrays plus JSON (inference.statecodec), never as a pickle. States written by
an older Kiln with torch.save are still read, with torch.load(weights_only=True) and only the
constraint classes allowed, so no stored byte can run code.
"""

from __future__ import annotations

import io
from typing import Any

import pyro
import torch
from numpy.typing import NDArray

from inference.statecodec import (
    StateFormatError,
    constraint_classes,
    decode,
    encode,
    is_encoded,
)

STATE_FORMAT = "kiln-param-store/npz-json/v2"
LEGACY_STATE_FORMAT = "pyro-param-store/torch.save/v1"
READABLE_STATE_FORMATS = (STATE_FORMAT, LEGACY_STATE_FORMAT)
# What a legacy (torch.save) state may contain besides tensors: the constraint classes.
LEGACY_SAFE_GLOBALS: list[Any] = list(constraint_classes())


def dump_state() -> bytes:
    """The current param store as bytes. Call right after the fit, before the guide runs again."""
    saved = pyro.get_param_store().get_state()
    return dump_param_state(saved["params"], saved["constraints"])


def dump_param_state(params: dict[str, torch.Tensor], constraints: dict[str, Any]) -> bytes:
    """A param store state built from unconstrained values and their constraints (e.g. one
    member's slice of a vectorised batch), in dump_state()'s format."""
    state = {"params": dict(params), "constraints": dict(constraints)}
    return encode({"format": STATE_FORMAT, "param_store": state})


def read_state(content: bytes, map_location: str = "cpu") -> dict[str, Any]:
    """The param store state in `content` (this format or the legacy one)."""
    if is_encoded(content):
        state = decode(content, map_location)
    else:
        try:
            with torch.serialization.safe_globals(LEGACY_SAFE_GLOBALS):
                state = torch.load(io.BytesIO(content), map_location=map_location,
                                   weights_only=True)  # fmt: skip
        except Exception as e:  # an unpickler refusal or damaged bytes: never run them
            raise StateFormatError(f"not a fitted state Kiln can read ({e})") from None
    if not isinstance(state, dict) or state.get("format") not in READABLE_STATE_FORMATS:
        raise StateFormatError("unknown fitted-state format")
    param_store = state["param_store"]
    if not isinstance(param_store, dict):
        raise StateFormatError("a fitted state without its param store")
    return param_store


def load_state(content: bytes, map_location: str = "cpu") -> None:
    """Replace the param store with a state from dump_state()."""
    state = read_state(content, map_location)
    pyro.clear_param_store()
    pyro.get_param_store().set_state(state)  # type: ignore[arg-type]


def param_values() -> dict[str, NDArray[Any]]:
    """Every parameter in the param store, constrained, as numpy arrays."""
    store = pyro.get_param_store()
    return {name: store[name].detach().cpu().numpy().copy() for name in store.keys()}

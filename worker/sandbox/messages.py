"""Inference events and errors as sandbox frames, and back, checked field by field.

An event's scalar fields travel in the header, its bytes and dicts of arrays as arrays. Only
the event classes below can be rebuilt, and each field is checked against the type its
dataclass declares, so a hostile process can send no more than a well-formed event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from inference.events import (
    ChainProgress,
    Checkpoint,
    Event,
    Finished,
    McmcFinished,
    McmcStarted,
    Metric,
    Started,
    Step,
)
from kiln.errors import DataError, KilnError, ModelError, SpecError, UserError
from worker.sandbox.wire import Frame, WireError, as_bytes_array

MAX_TEXT = 64 * 1024

EVENTS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        Started,
        Step,
        Checkpoint,
        Finished,
        Metric,
        McmcStarted,
        ChainProgress,
        McmcFinished,
    )  # fmt: skip
}
ERRORS: dict[str, type[UserError]] = {
    "ModelError": ModelError,
    "DataError": DataError,
    "SpecError": SpecError,
    "UserError": UserError,
}


def event_frame(event: Event) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, arrays) for one event of a class in EVENTS."""
    name = type(event).__name__
    if name not in EVENTS:
        raise WireError(f"a {name} event cannot leave the sandbox")
    fields: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, bytes):
            arrays[f.name] = as_bytes_array(value)
        elif isinstance(value, dict):
            for key, a in value.items():
                arrays[f"{f.name}/{key}"] = np.asarray(a)
        elif isinstance(value, tuple):
            fields[f.name] = list(value)
        else:
            fields[f.name] = value
    return {"type": "event", "event": name, "fields": fields}, arrays


def frame_event(frame: Frame) -> Event:
    """The event a frame from `event_frame` holds. Raises WireError."""
    cls = EVENTS.get(str(frame.header.get("event")))
    if cls is None:
        raise WireError(f"unknown event {str(frame.header.get('event'))[:80]!r}")
    sent = frame.header.get("fields")
    if not isinstance(sent, dict):
        raise WireError("an event without fields")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        check = _CHECKS.get(str(f.type))
        if check is None:  # a field type this codec does not know: refuse, never guess
            raise WireError(f"{cls.__name__}.{f.name} ({f.type}) cannot be sent")
        if str(f.type) == "bytes":
            blob = frame.blob(f.name)
            if blob is None:
                raise WireError(f"{cls.__name__} without its `{f.name}`")
            values[f.name] = blob
        elif str(f.type).startswith("dict["):
            values[f.name] = frame.group(f.name)
        elif f.name in sent:
            values[f.name] = check(f"{cls.__name__}.{f.name}", sent[f.name])
        elif f.default is dataclasses.MISSING:
            raise WireError(f"{cls.__name__} without its `{f.name}`")
    return cls(**values)  # type: ignore[no-any-return]


def _int(where: str, v: Any) -> int:
    if type(v) is not int or abs(v) >= 2**63:
        raise WireError(f"{where}: not a 64-bit integer")
    return v


def _float(where: str, v: Any) -> float:
    if type(v) is int and abs(v) < 2**63:
        return float(v)
    if type(v) is not float:
        raise WireError(f"{where}: not a number")
    return v


def _bool(where: str, v: Any) -> bool:
    if type(v) is not bool:
        raise WireError(f"{where}: not true or false")
    return v


def _str(where: str, v: Any) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise WireError(f"{where}: not a short string")
    return v


def _floats(where: str, v: Any) -> tuple[float, ...]:
    if not isinstance(v, list) or len(v) > 100_000:
        raise WireError(f"{where}: not a list of numbers")
    return tuple(_float(where, x) for x in v)


def _strs(where: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > 100_000:
        raise WireError(f"{where}: not a list of strings")
    return tuple(_str(where, x) for x in v)


def _arrays(where: str, v: Any) -> Any:
    return v  # dicts of arrays come from the frame's arrays, checked by the wire format


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "int": _int,
    "float": _float,
    "bool": _bool,
    "str": _str,
    "bytes": _arrays,
    "tuple[float, ...]": _floats,
    "tuple[str, ...]": _strs,
    "dict[str, NDArray[Any]]": _arrays,
}


def error_frame(e: BaseException, note: str = "") -> dict[str, Any]:
    """The header that reports a failure: a user error's class and message."""
    cls = type(e).__name__ if type(e).__name__ in ERRORS else "ModelError"
    message = str(e) if isinstance(e, KilnError) else f"{type(e).__name__}: {e}".rstrip(": ")
    return {"type": "error", "error": cls, "message": (message + note)[:MAX_TEXT]}


def frame_error(frame: Frame) -> UserError:
    cls = ERRORS.get(str(frame.header.get("error")), ModelError)
    return cls(_str("error message", frame.header.get("message", "")))

"""Pickle-free bytes for Pyro's states: named arrays (an .npz) plus a JSON tree that names them.

Pyro's param store, optimiser and RNG states hold tensors, numpy arrays, tuples, dicts with
int keys and torch constraint objects. `encode` writes the arrays into an .npz (numpy's format,
read back with allow_pickle=False) and everything else into JSON: containers tagged by type,
arrays by name, constraints by a registry of the ones Pyro's guides use. `decode` rebuilds
the same values (bitwise: floats go through numpy and JSON's round-trip repr). Nothing in the
bytes can name a callable, so reading hostile bytes raises an error and runs nothing.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pyro.distributions.constraints as pyro_constraints
import torch
from torch.distributions import constraints

from kiln.errors import UserError

META = "__kiln_meta__"
MAX_DEPTH = 64

# Constraints without parameters, by name: every such singleton torch and Pyro define (Pyro's
# module re-exports torch's), e.g. softplus_positive (AutoNormal's scales) and
# unit_lower_cholesky (AutoMultivariateNormal's scale_tril).
_NAMED: dict[str, constraints.Constraint] = {
    name: value
    for name in sorted(dir(pyro_constraints))
    if not name.startswith("_")
    and isinstance(value := getattr(pyro_constraints, name), constraints.Constraint)
    and name != "dependent"
}
# Constraints with bounds, by class (checked after the named ones: positive is a greater_than).
_BOUNDED: dict[str, tuple[type[constraints.Constraint], tuple[str, ...]]] = {
    "interval": (constraints._Interval, ("lower_bound", "upper_bound")),
    "half_open_interval": (constraints._HalfOpenInterval, ("lower_bound", "upper_bound")),
    "greater_than": (constraints._GreaterThan, ("lower_bound",)),
    "greater_than_eq": (constraints._GreaterThanEq, ("lower_bound",)),
    "less_than": (constraints._LessThan, ("upper_bound",)),
}


class StateFormatError(UserError):
    """Bytes that are not a state this codec wrote (or were altered): the job that reads them
    fails with this message, and is not retried."""


def encode(tree: Any) -> bytes:
    """`tree` (dicts, lists, tuples, scalars, tensors, arrays, constraints) as .npz bytes."""
    arrays: dict[str, np.ndarray] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            name = f"a{len(arrays)}"
            arrays[name] = value.detach().cpu().numpy().copy()
            return {"tensor": name, "grad": bool(value.requires_grad)}
        if isinstance(value, np.ndarray):
            name = f"a{len(arrays)}"
            arrays[name] = value.copy()
            return {"ndarray": name}
        if isinstance(value, constraints.Constraint):
            return {"constraint": _constraint(value, walk)}
        if isinstance(value, dict):
            return {"map": [[walk(k), walk(v)] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {"tuple": [walk(v) for v in value]}
        if isinstance(value, list):
            return {"list": [walk(v) for v in value]}
        if isinstance(value, np.generic):
            return walk(value.item())
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"cannot store a {type(value).__name__} in a Kiln state")

    meta = json.dumps(walk(tree)).encode()
    buffer = io.BytesIO()
    arrays[META] = np.frombuffer(meta, dtype=np.uint8)
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def _constraint(value: constraints.Constraint, walk: Any) -> Any:
    if isinstance(value, constraints._IndependentConstraint):
        return {"independent": _constraint(value.base_constraint, walk),
                "ndims": int(value.reinterpreted_batch_ndims)}  # fmt: skip
    for name, known in _NAMED.items():
        if type(value) is type(known) and _same_fields(value, known):
            return name
    for name, (cls, fields) in _BOUNDED.items():
        if type(value) is cls:
            return {name: [walk(getattr(value, f)) for f in fields]}
    raise TypeError(f"cannot store the constraint {value!r} in a Kiln state")


def _same_fields(a: constraints.Constraint, b: constraints.Constraint) -> bool:
    """Whether two constraints of one class have equal plain fields (a tensor bound: no)."""
    fields_a, fields_b = vars(a), vars(b)
    if fields_a.keys() != fields_b.keys():
        return False
    plain = (bool, int, float, str, type(None))
    return all(
        isinstance(fields_a[k], plain) and isinstance(fields_b[k], plain)
        and fields_a[k] == fields_b[k]
        for k in fields_a
    )  # fmt: skip


def constraint_classes() -> list[type[constraints.Constraint]]:
    """Every constraint class a state may hold (for reading states an older Kiln pickled)."""
    classes = {type(c) for c in _NAMED.values()} | {cls for cls, _ in _BOUNDED.values()}
    return sorted(classes | {constraints._IndependentConstraint}, key=lambda c: c.__name__)


def is_encoded(content: bytes) -> bool:
    """Whether `content` is an .npz this codec wrote (a torch.save zip is not)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return f"{META}.npy" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def decode(content: bytes, map_location: str = "cpu") -> Any:
    """The tree `encode` wrote; tensors on `map_location`. Raises StateFormatError."""
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays.pop(META).tobytes().decode())
    except (ValueError, KeyError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise StateFormatError(f"not a Kiln state ({e})") from None

    def walk(node: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise StateFormatError("a Kiln state nested too deep")
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if not isinstance(node, dict) or len(node) == 0:
            raise StateFormatError(f"unexpected node {str(node)[:80]!r} in a Kiln state")
        if "tensor" in node:
            tensor = torch.as_tensor(_array(arrays, node["tensor"])).to(map_location)
            return tensor.requires_grad_(bool(node.get("grad")) and tensor.is_floating_point())
        if "ndarray" in node:
            return _array(arrays, node["ndarray"])
        if "constraint" in node:
            return _rebuild(node["constraint"], lambda n: walk(n, depth + 1))
        if "map" in node:
            return {walk(k, depth + 1): walk(v, depth + 1) for k, v in node["map"]}
        if "tuple" in node:
            return tuple(walk(v, depth + 1) for v in node["tuple"])
        if "list" in node:
            return [walk(v, depth + 1) for v in node["list"]]
        raise StateFormatError(f"unexpected node {str(node)[:80]!r} in a Kiln state")

    return walk(meta)


def _array(arrays: dict[str, np.ndarray], name: Any) -> np.ndarray:
    if not isinstance(name, str) or name not in arrays:
        raise StateFormatError(f"a Kiln state names an array it does not hold ({name!r})")
    return arrays[name]


def _rebuild(node: Any, walk: Any) -> constraints.Constraint:
    if isinstance(node, str) and node in _NAMED:
        return _NAMED[node]
    if isinstance(node, dict) and "independent" in node:
        base = _rebuild(node["independent"], walk)
        return constraints.independent(base, int(node["ndims"]))  # type: ignore[no-untyped-call]
    if isinstance(node, dict) and len(node) == 1:
        ((name, bounds),) = node.items()
        if name in _BOUNDED and isinstance(bounds, list):
            cls, fields = _BOUNDED[name]
            if len(bounds) == len(fields):
                return cls(*(walk(b) for b in bounds))
    raise StateFormatError(f"unknown constraint {str(node)[:80]!r} in a Kiln state")

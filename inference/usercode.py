"""Users' model files: run source text as a module, find its functions, explain its errors,
and turn JSON data (names to numbers and nested lists) into tensors."""

from __future__ import annotations

import hashlib
import linecache
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np
import torch

from kiln.errors import DataError, ModelError

# The module's own copy of its source lines, so messages quote the version that ran even when
# another file of the same name was loaded later (linecache is keyed by file name only).
_SOURCE_LINES = "__kiln_source_lines__"

_DTYPES: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
}


def load_module(source: str, filename: str) -> types.ModuleType:
    """Compile and run `source` as a fresh module named `kiln_user_<sha12>`.

    The module is registered in sys.modules and its source in linecache, so tracebacks and
    inspect show the user's lines. Raises ModelError for a syntax error or an exception while
    the file runs, with the line of `filename` where it happened.
    """
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as e:
        text = (e.text or "").strip()
        where = f"{filename} line {e.lineno}" if e.lineno else filename
        raise ModelError(f"{where}: {e.msg}" + (f": {text}" if text else "")) from e
    except ValueError as e:  # e.g. a NUL byte in the source
        raise ModelError(f"{filename} cannot be compiled: {e}") from e
    name = "kiln_user_" + hashlib.sha256(source.encode()).hexdigest()[:12]
    lines = source.splitlines(keepends=True)
    module = types.ModuleType(name)
    module.__file__ = filename
    setattr(module, _SOURCE_LINES, lines)
    linecache.cache[filename] = (len(source), None, lines, filename)  # mtime None: never stale
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as e:
        del sys.modules[name]
        line = _user_line(e, filename)
        at = f" (line {line[0]})" if line else ""
        raise ModelError(f"{filename} failed to import: {_headline(e)}{at}") from e
    return module


def get_function(module: types.ModuleType, name: str, filename: str) -> Callable[..., Any]:
    """The callable `name` of a module from load_module; ModelError listing what it defines."""
    found = getattr(module, name, None)
    if callable(found):
        return cast(Callable[..., Any], found)
    defined = sorted(
        key
        for key, value in vars(module).items()
        if not key.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
    )
    listing = f"it defines: {', '.join(defined)}" if defined else "it defines no functions"
    if found is not None:
        listing = f"`{name}` is a {type(found).__name__}; {listing}"
    raise ModelError(f"{filename} has no function `{name}` ({listing})")


def describe_exception(e: BaseException, filename: str) -> str:
    """`KeyError: 'tau' at my_models.py line 7: `tau = data['tau']``: the exception and the
    deepest line of the user's file in its traceback (the first line of a long message first,
    the rest after the location)."""
    head, _, rest = _message(e).partition("\n")
    line = _user_line(e, filename)
    if line is None:
        text = head
    else:
        number, code = line
        text = f"{head} at {filename} line {number}" + (f": `{code}`" if code else "")
    rest_lines = [r for r in rest.splitlines() if r.strip()][:8]
    return "\n".join([text, *rest_lines])


def to_tensors(
    data: Mapping[str, Any], device: str = "cpu", dtypes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """JSON-style data to model arguments.

    Python int, float and bool scalars stay Python values (so `pyro.plate("J", J)` works);
    nested rectangular lists and numpy arrays become tensors on `device`: int64 when every
    number is an int, bool when every one is a bool, float64 otherwise. `dtypes` (a file's
    `DTYPES` dict, e.g. {"y": "float32"}) overrides the dtype of the fields it names, scalars
    included. Raises DataError naming the field for ragged lists, strings, nulls and objects.
    """
    if not isinstance(data, Mapping):
        raise DataError(f"data must be an object of named fields (got {type(data).__name__})")
    overrides = _check_dtypes(dtypes)
    tensors: dict[str, Any] = {}
    for name, value in data.items():
        dtype = overrides.get(name)
        converted = _convert(str(name), value)
        if isinstance(converted, torch.Tensor):
            converted = converted.to(device=device, dtype=dtype or converted.dtype)
        elif dtype is not None:
            converted = torch.tensor(converted, dtype=dtype, device=device)
        tensors[name] = converted
    return tensors


def _check_dtypes(dtypes: Mapping[str, str] | None) -> dict[str, torch.dtype]:
    if dtypes is None:
        return {}
    if not isinstance(dtypes, Mapping):
        got = type(dtypes).__name__
        raise ModelError(f"DTYPES must be a dict of field name to dtype name (got {got})")
    out = {}
    for name, dtype in dtypes.items():
        if dtype not in _DTYPES:
            raise DataError(
                f"DTYPES[{name!r}]: unknown dtype {dtype!r} (have: {', '.join(_DTYPES)})",
                column=str(name),
            )
        out[name] = _DTYPES[dtype]
    return out


def _convert(name: str, value: Any) -> Any:
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, np.generic):
        return _convert(name, value.item())
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise DataError(
                f"data field `{name}`: array of {value.dtype} is not numbers", column=name
            )
        kind = {"b": np.bool_, "f": np.float64}.get(value.dtype.kind, np.int64)
        return torch.from_numpy(np.array(value, dtype=kind))  # a copy: writable, contiguous
    if isinstance(value, list | tuple):
        kinds: set[type] = set()
        _check_nested(name, value, kinds)
        if kinds <= {bool} and kinds:
            dtype = torch.bool
        elif kinds <= {int, bool}:
            dtype = torch.int64 if kinds else torch.float64  # [] is float, like numpy
        else:
            dtype = torch.float64
        try:
            return torch.tensor(value, dtype=dtype)
        except (OverflowError, RuntimeError) as e:
            raise DataError(f"data field `{name}`: {e}", column=name) from e
    raise DataError(f"data field `{name}`: {_not_a_number(value)}", column=name)


def _check_nested(name: str, value: Any, kinds: set[type]) -> tuple[int, ...]:
    """The shape of a nested list; adds the Python types of its numbers to `kinds`."""
    if not value:
        return (0,)
    if isinstance(value[0], list | tuple):
        inner = _check_nested(name, value[0], kinds)
        for row in value[1:]:
            if not isinstance(row, list | tuple):
                raise DataError(
                    f"data field `{name}`: ragged nested list (a list next to {_not_a_list(row)})",
                    column=name,
                )
            shape = _check_nested(name, row, kinds)
            if shape != inner:
                what = (
                    f"rows of length {len(value[0])} and {len(row)}"
                    if len(row) != len(value[0])
                    else f"rows of shape {inner} and {shape}"
                )
                raise DataError(f"data field `{name}`: ragged nested list ({what})", column=name)
        return (len(value), *inner)
    for item in value:
        if isinstance(item, bool | int | float):
            kinds.add(type(item))
        elif isinstance(item, np.generic) and isinstance(item.item(), bool | int | float):
            kinds.add(type(item.item()))
        elif isinstance(item, list | tuple):
            raise DataError(
                f"data field `{name}`: ragged nested list (a number next to a list)", column=name
            )
        else:
            raise DataError(f"data field `{name}`: {_not_a_number(item)} in a list", column=name)
    return (len(value),)


def _not_a_number(value: Any) -> str:
    if value is None:
        return "null is not a number (leave the field out, or use a number)"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:20] + "..."
        return f"a string is not a number (got {shown!r})"
    if isinstance(value, Mapping):
        return "a nested object is not a number or a list of numbers"
    return f"{type(value).__name__} is not a number"


def _not_a_list(value: Any) -> str:
    if value is None:
        return "null"
    return "a number" if isinstance(value, bool | int | float) else f"a {type(value).__name__}"


def _user_line(e: BaseException, filename: str) -> tuple[int, str] | None:
    """(line number, stripped source) of the deepest traceback frame in `filename`."""
    found = None
    tb = e.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename == filename:
            found = (tb.tb_lineno, frame.f_globals.get(_SOURCE_LINES))
        tb = tb.tb_next
    if found is None:
        return None
    number, lines = found
    if isinstance(lines, list) and 0 < number <= len(lines):
        code = lines[number - 1]
    else:
        code = linecache.getline(filename, number)
    return number, code.strip()


def _message(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _headline(e: BaseException) -> str:
    return _message(e).partition("\n")[0]

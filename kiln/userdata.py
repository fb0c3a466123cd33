"""Data for users' own models: a JSON object or a CSV file -> {name: number or (nested) list}.

The JSON layout is Stan's and posteriordb's: names to numbers and rectangular nested lists. A
CSV's columns become lists. Pure Python + pandas (no torch): the scheduler checks a submission
with it and the worker reads the same values before making tensors.
"""

from __future__ import annotations

import json
import math
from typing import Any

from kiln.errors import DataError
from kiln.tables import read_csv_bytes

Value = int | float | bool | list[Any]
MAX_DEPTH = 32  # nested lists (a tensor of rank 32 is already absurd)
INT64 = (-(2**63), 2**63 - 1)
MAX_NAMES = 1_000  # data names (a model function's parameters)
MAX_NAME = 255  # characters of a data name
MAX_INT_DIGITS = 20  # 2**63 has 19 digits: longer integers are refused before int() reads them
MAX_JSON_BYTES = 256 * 1024 * 1024  # json.loads needs ~10x the text in Python objects


def parse_user_data(content: bytes, name: str) -> tuple[str, dict[str, Value]]:
    """(format, data): `json` for a .json file or anything that starts like JSON, else `csv`."""
    looks_json = content.lstrip()[:1] in (b"{", b"[")
    if name.lower().endswith(".json") or looks_json:
        return "json", _from_json(content, name)
    return "csv", _from_csv(content, name)


def _from_json(content: bytes, name: str) -> dict[str, Value]:
    if len(content) > MAX_JSON_BYTES:
        raise DataError(
            f"{name}: {len(content)} bytes of JSON; at most {MAX_JSON_BYTES} (give large"
            " data as CSV)"
        )
    try:
        raw = json.loads(
            content.decode("utf-8"),
            parse_constant=_no_constant,
            parse_int=_integer,
            object_pairs_hook=_no_repeats,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{name}: not a readable JSON file ({_clip(str(e))})") from None
    except DataError as e:  # from the hooks: a constant, a long integer, a repeated name
        raise DataError(f"{name}: {e}", e.column) from None
    except RecursionError:
        raise DataError(f"{name}: the JSON is nested too deep") from None
    if not isinstance(raw, dict):
        raise DataError(
            f"{name}: the JSON must be an object of names to numbers and lists"
            f" (got a {type(raw).__name__})"
        )
    if not raw:
        raise DataError(f"{name}: the JSON object is empty; the model gets no data")
    check_names(list(raw), name)
    for field, value in raw.items():
        check_value(field, value, name)
    return raw


def check_names(names: list[str], name: str) -> None:
    """Data names: at most MAX_NAMES, each a Python identifier of at most MAX_NAME characters
    (they become a model function's keyword arguments)."""
    if len(names) > MAX_NAMES:
        raise DataError(f"{name}: {len(names)} data names; at most {MAX_NAMES}")
    for field in names:
        if len(field) > MAX_NAME:
            raise DataError(
                f"{name}: data name `{_clip(field)}` is {len(field)} characters; at most"
                f" {MAX_NAME}",
                _clip(field),
            )
        if not field.isidentifier():
            raise DataError(
                f"{name}: data name `{_clip(field)}` is not a Python identifier", _clip(field)
            )


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _integer(text: str) -> int:
    """json's parse_int: an integer of more digits than 64 bits hold is refused unread (int()
    of a 100,000-digit string takes seconds, and Python refuses more than 4,300)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise DataError(f"an integer of {len(text)} digits is beyond 64 bits")
    return int(text)


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: a name given twice is ambiguous (which one did the user
    mean?), so it is refused instead of keeping the last."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DataError(f"the name `{_clip(key)}` is given twice in one object", _clip(key))
        out[key] = value
    return out


def _from_csv(content: bytes, name: str) -> dict[str, Value]:
    frame = read_csv_bytes(content, name)
    data: dict[str, Value] = {}
    if len(frame.columns) > MAX_NAMES:
        raise DataError(f"{name}: {len(frame.columns)} columns; at most {MAX_NAMES}")
    for column in frame.columns:
        field = str(column).strip()
        if not field.isidentifier():
            raise DataError(
                f"{name}: column `{_clip(field)}` is not a Python identifier, so it cannot be a"
                " model argument; rename it",
                _clip(field),
            )
        series = frame[column]
        if series.dtype.kind not in "iufb":
            raise DataError(f"{name}: column `{field}` is not numeric ({series.dtype})", field)
        if series.isna().any():
            raise DataError(
                f"{name}: column `{field}` has {int(series.isna().sum())} missing values", field
            )
        data[field] = series.tolist()
        check_value(field, data[field], name)  # infinities
    return data


def _no_constant(text: str) -> float:
    raise DataError(f"`{text}` is not a number the data may hold (give finite numbers)")


def check_value(field: str, value: Any, name: str = "data", depth: int = 0) -> tuple[int, ...]:
    """The shape of a number or a rectangular nested list of numbers; DataError otherwise
    (NaN, infinities, integers beyond 64 bits, lists nested deeper than MAX_DEPTH)."""
    if isinstance(value, bool):
        return ()
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise DataError(f"{name}: data field `{field}` has an integer beyond 64 bits", field)
        return ()
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{name}: data field `{field}` is {value} (not finite)", field)
        return ()
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise DataError(f"{name}: data field `{field}` is nested deeper than {MAX_DEPTH}")
        if not value:
            return (0,)
        shapes = {check_value(field, item, name, depth + 1) for item in value}
        if len(shapes) > 1:
            lengths = sorted({s[0] if s else 1 for s in shapes})
            raise DataError(
                f"{name}: data field `{field}` is a ragged nested list (rows of lengths "
                f"{', '.join(map(str, lengths))}); make it rectangular",
                field,
            )
        return (len(value), *shapes.pop())
    what = "null" if value is None else type(value).__name__
    raise DataError(f"{name}: data field `{field}` is a {what}; give numbers or lists", field)


def describe(data: dict[str, Value]) -> dict[str, list[int]]:
    """{name: shape} for the job's record."""
    return {field: list(check_value(field, value)) for field, value in data.items()}

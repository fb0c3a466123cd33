"""The sandbox's wire format: a JSON header and named numeric arrays, never a pickle.

A frame is a 4-byte big-endian header length, the header (UTF-8 JSON, an object), an 8-byte
payload length and the payload: the raw C-order bytes of the arrays the header's `arrays` list
names, one after the other, as `[name, dtype, shape]`. Bytes travel as uint8 arrays. Reading
checks every size against caps before it reads, takes dtypes from a fixed list of numeric
ones, and needs the arrays to fill the payload exactly, so a frame from a hostile process is
either these plain values or a WireError.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

MAX_HEADER_BYTES = 8 * 1024 * 1024
MAX_NAME_CHARS = 1024
MAX_ARRAYS = 100_000
MAX_DIMS = 32
DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64"}
)  # fmt: skip


class WireError(Exception):
    """A frame that breaks the format or its caps."""


@dataclass(slots=True)
class Frame:
    """One message: the header's fields (without `arrays`) and the arrays by name."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.header.get("type", ""))

    def blob(self, name: str) -> bytes | None:
        """The bytes sent as array `name`, or None when there is none."""
        value = self.arrays.get(name)
        if value is None:
            return None
        if value.dtype != np.uint8 or value.ndim != 1:
            raise WireError(f"`{name}` is not bytes")
        return value.tobytes()

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays named `prefix/NAME`, by NAME."""
        start = prefix + "/"
        return {k[len(start) :]: v for k, v in self.arrays.items() if k.startswith(start)}


def as_bytes_array(content: bytes) -> np.ndarray:
    return np.frombuffer(content, dtype=np.uint8)


def write_frame(
    out: IO[bytes], header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
) -> None:
    """Write one frame and flush."""
    listed: list[list[Any]] = []
    parts: list[np.ndarray] = []
    for name, value in (arrays or {}).items():
        a = np.ascontiguousarray(value)
        if a.dtype.name not in DTYPES:
            raise WireError(f"array `{name}` of {a.dtype} cannot be sent")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        listed.append([name, a.dtype.name, list(a.shape)])
        parts.append(a)
    head = json.dumps({**header, "arrays": listed}, allow_nan=True).encode()
    if len(head) > MAX_HEADER_BYTES:
        raise WireError(f"a header of {len(head)} bytes is over the cap")
    out.write(struct.pack(">I", len(head)))
    out.write(head)
    out.write(struct.pack(">Q", sum(p.nbytes for p in parts)))
    for p in parts:
        out.write(p.reshape(-1).view(np.uint8).data)
    out.flush()


def read_frame(src: IO[bytes], max_payload: int) -> Frame | None:
    """The next frame, or None at a clean end of stream. Raises WireError."""
    first = src.read(4)
    if not first:
        return None
    (head_len,) = struct.unpack(">I", _exact(src, 4, first))
    if head_len > MAX_HEADER_BYTES:
        raise WireError(f"a header of {head_len} bytes is over the cap")
    try:
        header = json.loads(_exact(src, head_len).decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError(f"a header that is not JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise WireError("a header that is not an object")
    (payload_len,) = struct.unpack(">Q", _exact(src, 8))
    if payload_len > max_payload:
        raise WireError(f"a payload of {payload_len} bytes is over the cap of {max_payload}")
    layout = _layout(header.pop("arrays", []), payload_len)
    payload = _exact(src, payload_len)
    arrays = {
        name: np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
        for name, dtype, shape, count, offset in layout
    }
    return Frame(header, arrays)


_Layout = list[tuple[str, np.dtype[Any], tuple[int, ...], int, int]]


def _layout(listed: Any, payload_len: int) -> _Layout:
    if not isinstance(listed, list) or len(listed) > MAX_ARRAYS:
        raise WireError("a header whose `arrays` is not a list (or too long)")
    out = []
    offset = 0
    for entry in listed:
        if not (isinstance(entry, list) and len(entry) == 3):
            raise WireError("an array entry that is not [name, dtype, shape]")
        name, dtype_name, shape = entry
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise WireError("an array name that is not a short string")
        if dtype_name not in DTYPES:
            raise WireError(f"array `{name[:80]}` of dtype {str(dtype_name)[:40]!r} is not allowed")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or not all(type(d) is int and 0 <= d <= payload_len for d in shape)
        ):  # fmt: skip
            raise WireError(f"array `{name[:80]}` has a bad shape")
        dtype = np.dtype(dtype_name).newbyteorder("<")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        if offset + nbytes > payload_len:
            raise WireError(f"array `{name[:80]}` runs past the payload")
        out.append((name, dtype, tuple(shape), count, offset))
        offset += nbytes
    if offset != payload_len:
        raise WireError("the arrays do not fill the payload")
    return out


def _exact(src: IO[bytes], n: int, got: bytes = b"") -> bytes:
    chunks = [got] if got else []
    have = len(got)
    while have < n:
        chunk = src.read(min(n - have, 1 << 24))
        if not chunk:
            raise WireError("the stream ended inside a frame")
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)

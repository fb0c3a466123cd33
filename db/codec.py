"""numpy array <-> bytes: a small JSON header (dtype, shape) and zlib-compressed data, or the
raw data where zlib would not pay (a header field `"raw": true`).

Most float64 draws are incompressible (random low bits): zlib saves about 6% of an 80 MB
log-likelihood array for 3.6 s of encoding, paid at every store. So an array over
PROBE_BYTES is first probed: when zlib at level 1 keeps more than RAW_RATIO of its first
PROBE_BYTES, it is stored raw."""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np

from kiln.errors import DataError

_MAGIC = b"KA1"
MAX_HEADER = 4096
MAX_ARRAY_BYTES = 2**31  # 2 GiB: above any array Kiln stores (predict draws are capped lower)
PROBE_BYTES = 256 * 1024  # arrays at least this large are probed before compressing
RAW_RATIO = 0.9  # compressed / raw of the probe above which the array is stored raw
# Plain numeric dtypes only: an object dtype could hold anything.
_KINDS = "biuf"


class CodecError(DataError):
    """Bytes that are not an array encode_array() wrote, or claim more than they may hold."""


def encode_array(array: np.ndarray, level: int = 6) -> bytes:
    """Bytes holding `array`'s dtype, shape and compressed little-endian contents."""
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<")
    data = array.astype(dtype, copy=False).tobytes()
    fields: dict[str, object] = {"dtype": dtype.str, "shape": list(array.shape)}
    probe = data[:PROBE_BYTES]
    raw = len(data) >= PROBE_BYTES and len(zlib.compress(probe, 1)) > RAW_RATIO * len(probe)
    if raw:
        fields["raw"] = True
    header = json.dumps(fields).encode()
    body = data if raw else zlib.compress(data, level)
    return _MAGIC + struct.pack("<I", len(header)) + header + body


def decode_array(content: bytes, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """The array encode_array() stored. The header's dtype and shape are checked first, and
    the data is decompressed to at most the size they give (a crafted blob cannot expand
    past it); anything else raises CodecError."""
    if content[:3] != _MAGIC or len(content) < 7:
        raise CodecError("not an encoded array (bad magic)")
    (size,) = struct.unpack("<I", content[3:7])
    if size > MAX_HEADER:
        raise CodecError(f"an encoded array's header is {size} bytes; at most {MAX_HEADER}")
    try:
        header = json.loads(content[7 : 7 + size])
        dtype = np.dtype(str(header["dtype"]))
        listed = header["shape"]
        if not isinstance(listed, list) or not all(type(n) is int for n in listed):
            raise TypeError("the shape is not a list of whole numbers")
        shape = tuple(listed)
        raw = header.get("raw", False)
        if type(raw) is not bool:
            raise TypeError("raw is not true or false")
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise CodecError(f"an encoded array's header is unreadable ({e})") from None
    if dtype.kind not in _KINDS or any(n < 0 for n in shape) or len(shape) > 32:
        dims = ", ".join(str(n) if n.bit_length() < 64 else "(huge)" for n in shape[:33])
        raise CodecError(f"an encoded array claims dtype {dtype.str} and shape ({dims})")
    expected = dtype.itemsize * math.prod(shape)  # exact: Python ints do not overflow
    if expected > max_bytes:
        raise CodecError(f"an encoded array claims about 2**{expected.bit_length() - 1} bytes;"
                         f" at most {max_bytes}")  # fmt: skip
    if raw:
        if len(content) - 7 - size != expected:
            raise CodecError(f"an encoded array holds more or less data than its shape {shape}")
        return np.frombuffer(content, dtype=dtype, count=math.prod(shape),
                             offset=7 + size).reshape(shape).copy()  # fmt: skip
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(content[7 + size :], expected + 1)
    except zlib.error as e:
        raise CodecError(f"an encoded array's data is damaged ({e})") from None
    if len(data) != expected or inflate.unconsumed_tail or not inflate.eof or inflate.unused_data:
        raise CodecError(f"an encoded array holds more or less data than its shape {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()

"""numpy array <-> bytes: a small JSON header (dtype, shape) and zlib-compressed data."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

_MAGIC = b"KA1"


def encode_array(array: np.ndarray, level: int = 6) -> bytes:
    """Bytes holding `array`'s dtype, shape and compressed little-endian contents."""
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<")
    header = json.dumps({"dtype": dtype.str, "shape": list(array.shape)}).encode()
    body = zlib.compress(array.astype(dtype, copy=False).tobytes(), level)
    return _MAGIC + struct.pack("<I", len(header)) + header + body


def decode_array(content: bytes) -> np.ndarray:
    """The array encode_array() stored."""
    if content[:3] != _MAGIC:
        raise ValueError("not an encoded array (bad magic)")
    (size,) = struct.unpack("<I", content[3:7])
    header = json.loads(content[7 : 7 + size])
    data = zlib.decompress(content[7 + size :])
    return np.frombuffer(data, dtype=np.dtype(header["dtype"])).reshape(header["shape"]).copy()

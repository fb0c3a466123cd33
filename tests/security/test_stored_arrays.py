"""Stored arrays are decoded with caps from their header: a crafted blob (a zip bomb, an object
dtype, an absurd shape, a damaged body) is refused with a message, never expanded."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from db.codec import CodecError, decode_array, encode_array


def blob(header: dict[str, object], body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return b"KA1" + struct.pack("<I", len(text)) + text + body


def test_arrays_round_trip_exactly() -> None:
    for array in (np.random.default_rng(0).normal(size=(3, 4)), np.arange(7), np.zeros((0, 2)),
                  np.array([True, False]), np.array([1.5, np.nan], dtype=np.float32)):  # fmt: skip
        np.testing.assert_array_equal(decode_array(encode_array(array)), array)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (blob({"dtype": "<f8", "shape": [10]}, zlib.compress(bytes(64 * 2**20))), "more or less"),
        (blob({"dtype": "|O", "shape": [1]}, zlib.compress(bytes(8))), "claims dtype |O"),
        (blob({"dtype": "<f8", "shape": [10**9, 10**9]}, b""), "at most"),
        (blob({"dtype": "<f8", "shape": [-1]}, b""), "claims dtype"),
        (blob({"dtype": "<f8", "shape": [2]}, b"not zlib"), "damaged"),
        (blob({"shape": [2]}, b""), "unreadable"),
        (b"KA1" + struct.pack("<I", 10**6) + b"{}", "header is 1000000 bytes"),
        (b"PK\x03\x04", "bad magic"),
    ],
    ids=["bomb", "object", "huge", "negative", "damaged", "no-dtype", "big-header", "magic"],
)
def test_a_crafted_blob_is_refused_without_being_expanded(content: bytes, named: str) -> None:
    with pytest.raises(CodecError, match=named):
        decode_array(content)

"""Stored arrays are decoded with caps from their header: a crafted blob (a zip bomb, an object
dtype, an absurd shape, a damaged body) is refused with a message, never expanded."""

from __future__ import annotations

import json
import re
import struct
import zlib

import numpy as np
import pytest

from db.codec import PROBE_BYTES, CodecError, decode_array, encode_array


def blob(header: dict[str, object], body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return b"KA1" + struct.pack("<I", len(text)) + text + body


def test_arrays_round_trip_exactly() -> None:
    for array in (np.random.default_rng(0).normal(size=(3, 4)), np.arange(7), np.zeros((0, 2)),
                  np.array([True, False]), np.array([1.5, np.nan], dtype=np.float32)):  # fmt: skip
        np.testing.assert_array_equal(decode_array(encode_array(array)), array)


def test_incompressible_arrays_are_stored_raw_and_compressible_ones_compressed() -> None:
    noise = np.random.default_rng(1).normal(size=PROBE_BYTES // 4)  # 2 x PROBE_BYTES of float64
    zeros = np.zeros(PROBE_BYTES // 4)
    small = np.random.default_rng(2).normal(size=10)  # under the probe: always zlib
    for array, stored_raw in ((noise, True), (zeros, False), (small, False)):
        content = encode_array(array)
        (size,) = struct.unpack("<I", content[3:7])
        assert json.loads(content[7 : 7 + size]).get("raw", False) is stored_raw
        np.testing.assert_array_equal(decode_array(content), array)
    assert len(encode_array(noise)) < noise.nbytes + 100
    assert len(encode_array(zeros)) < zeros.nbytes / 100


def raw(header: bytes, body: bytes = b"") -> bytes:
    return b"KA1" + struct.pack("<I", len(header)) + header + body


ZEROS_8 = zlib.compress(bytes(8))
# Known holes in db/codec.py decode_array: a header nested past Python's recursion limit, a
# shape whose product overflows a float (OverflowError, or numpy's RuntimeWarning), and data
# after the compressed stream are not refused as CodecError yet.
BLOBS = [
    ("bomb", blob({"dtype": "<f8", "shape": [10]}, zlib.compress(bytes(64 * 2**20))),
     "more or less"),
    ("object", blob({"dtype": "|O", "shape": [1]}, zlib.compress(bytes(8))), "claims dtype |O"),
    ("huge", blob({"dtype": "<f8", "shape": [10**9, 10**9]}, b""), "at most"),
    ("negative", blob({"dtype": "<f8", "shape": [-1]}, b""), "claims dtype"),
    ("damaged", blob({"dtype": "<f8", "shape": [2]}, b"not zlib"), "damaged"),
    ("no-dtype", blob({"shape": [2]}, b""), "unreadable"),
    ("big-header", b"KA1" + struct.pack("<I", 10**6) + b"{}", "header is 1000000 bytes"),
    ("magic", b"PK\x03\x04", "bad magic"),
    ("empty", b"", "bad magic"),
    ("header-past-the-end", b"KA1" + struct.pack("<I", 100) + b"{}", "unreadable"),
    ("header-a-list", raw(b"[1, 2]"), "unreadable"),
    ("shape-nan", raw(b'{"dtype": "<f8", "shape": [NaN]}'), "unreadable"),
    ("dtype-a-dict", blob({"dtype": {"names": ["a"], "formats": ["<f8"]}, "shape": [1]}, b""),
     "unreadable"),
    ("subarray-dtype", blob({"dtype": "(2,)<f8", "shape": [1]}, zlib.compress(bytes(16))),
     "claims dtype |V16"),
    ("void-dtype", blob({"dtype": "V8", "shape": [1]}, ZEROS_8), "claims dtype |V8"),
    ("text-dtype", blob({"dtype": "<U4", "shape": [1]}, zlib.compress(bytes(16))),
     "claims dtype <U4"),
    ("datetime-dtype", blob({"dtype": "<M8[s]", "shape": [1]}, ZEROS_8), "claims dtype <M8[s]"),
    ("complex-dtype", blob({"dtype": "<c16", "shape": [1]}, zlib.compress(bytes(16))),
     "claims dtype <c16"),
    ("object-inside-a-record", blob({"dtype": "<f8,|O", "shape": [1]}, b""), "claims dtype |V"),
    ("2-gb-items", blob({"dtype": "V2000000000", "shape": [1]}, b""), "claims dtype"),
    ("33-dimensions", blob({"dtype": "<f8", "shape": [1] * 33}, ZEROS_8), "claims dtype"),
    ("cut-short", blob({"dtype": "<f8", "shape": [1000]}, zlib.compress(bytes(8000))[:20]),
     "more or less"),
    ("raw-cut-short", blob({"dtype": "<f8", "shape": [1000], "raw": True}, bytes(7999)),
     "more or less"),
    ("raw-too-long", blob({"dtype": "<f8", "shape": [2], "raw": True}, bytes(17)), "more or less"),
    ("raw-huge", blob({"dtype": "<f8", "shape": [10**9, 10**9], "raw": True}, b""), "at most"),
    ("raw-not-a-bool", blob({"dtype": "<f8", "shape": [1], "raw": "yes"}, bytes(8)),
     "unreadable"),
    ("raw-false-is-zlib", blob({"dtype": "<f8", "shape": [1], "raw": False}, bytes(8)),
     "damaged"),
]  # fmt: skip
HOLES = [  # once holes in decode_array: a RecursionError, an OverflowError, trailing data
    ("header-nested-2000-deep", raw(b"[" * 2000 + b"]" * 2000), "unreadable"),
    ("shape-overflows-a-float", blob({"dtype": "<f8", "shape": [10**200] * 2}, b""), "at most"),
    ("shape-past-a-float", blob({"dtype": "<f8", "shape": [10**400]}, b""), "at most"),
    ("data-after-the-stream", blob({"dtype": "<f8", "shape": [1]}, ZEROS_8 + b"x"),
     "more or less"),
    ("two-streams", blob({"dtype": "<f8", "shape": [1]}, ZEROS_8 + ZEROS_8), "more or less"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "named"),
    [pytest.param(c, n, id=i) for i, c, n in BLOBS + HOLES],
)
def test_a_crafted_blob_is_refused_without_being_expanded(content: bytes, named: str) -> None:
    with pytest.raises(CodecError, match=re.escape(named)):
        decode_array(content)

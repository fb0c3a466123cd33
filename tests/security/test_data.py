"""Hostile data files: JSON and CSV for a user's model (to fit, and to predict from a fit), CSV
for the built-in linreg. Each is refused by name at submit (exit 2): non-finite numbers,
integers past 64 bits, deep nesting, repeated and absurd names, binary or oversized files;
nothing is written or queued, and no code runs. On SQLite + the embedded broker and on
PostgreSQL + Redis (tests/security/conftest.py: `target`)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import offline_client
from tests.security.conftest import Target

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCHOOLS_PY = EXAMPLES / "eight_schools.py"
SIGMA = "[15, 10, 16, 11, 9, 11, 10, 18]"
CODE = "__import__('os').system('touch {M}')"


def _obj(extra: str) -> bytes:
    return ('{"J": 8, "sigma": ' + SIGMA + extra + "}").encode()


# (id, file name, content, what the message must say[, KILN_* settings])
Case = tuple[str, str, bytes, str] | tuple[str, str, bytes, str, dict[str, str]]

JSON_DATA: list[Case] = [
    ("infinity", "d.json", _obj(', "y": Infinity'), "`Infinity` is not a number"),
    ("minus-infinity", "d.json", _obj(', "y": -Infinity'), "`-Infinity` is not a number"),
    ("nan", "d.json", _obj(', "y": NaN'), "`NaN` is not a number"),
    ("1e400", "d.json", _obj(', "y": 1e400'), "data field `y` is inf (not finite)"),
    ("minus-1e400-in-a-list", "d.json", _obj(', "y": [1, -1e400]'), "is -inf (not finite)"),
    ("100-digit-integer", "d.json", b'{"J": ' + b"9" * 100 + b', "sigma": [1]}',
     "an integer of 100 digits is beyond 64 bits"),
    ("5000-digit-integer", "d.json", b'{"J": ' + b"9" * 5000 + b', "sigma": [1]}',
     "an integer of 5000 digits is beyond 64 bits"),
    ("2-to-the-63", "d.json", _obj(f', "y": {2**63}'), "data field `y` has an integer beyond"),
    ("nested-5000-deep", "d.json", _obj(', "y": ' + "[" * 5000 + "]" * 5000),
     "the JSON is nested too deep"),
    ("nested-40-deep", "d.json", _obj(', "y": ' + "[" * 40 + "1" + "]" * 40),
     "nested deeper than 32"),
    ("ragged", "d.json", _obj(', "y": [1, [2]]'), "is a ragged nested list"),
    ("null", "d.json", _obj(', "y": null'), "data field `y` is a null"),
    ("text", "d.json", _obj(', "y": "1"'), "data field `y` is a str"),
    ("object", "d.json", _obj(', "y": {"a": 1}'), "data field `y` is a dict"),
    ("repeated-name", "d.json", _obj(', "J": 9'), "the name `J` is given twice"),
    ("dunder-name", "d.json", _obj(', "__class__": 1'), "`__class__`, which is not a parameter"),
    ("code-as-a-name", "d.json", _obj(f', "{CODE}": 1'), "is not a Python identifier"),
    ("100k-character-name", "d.json", _obj(', "' + "a" * 100_000 + '": 1'),
     "is 100000 characters; at most 255"),
    ("2000-names", "d.json", json.dumps({f"k{i}": i for i in range(2000)}).encode(),
     "2000 data names; at most 1000"),
    ("a-list-not-an-object", "d.json", b"[1, 2, 3]", "must be an object of names"),
    ("empty-object", "d.json", b"{}", "the JSON object is empty"),
    ("byte-order-mark", "d.json", "\ufeff".encode() + _obj(""), "not a readable JSON file"),
    ("not-utf-8", "d.json", b'{"J": 8, "sigma": [1], "y\xe9": 1}', "not a readable JSON file"),
    ("past-the-dataset-cap", "d.json", _obj(""), "bytes; the limit is 40",
     {"KILN_MAX_DATASET_BYTES": "40"}),
]  # fmt: skip

CSV_DATA: list[Case] = [
    ("inf-cell", "d.csv", b"J,sigma\n8,inf\n8,1\n", "data field `sigma` is inf (not finite)"),
    ("minus-inf-cell", "d.csv", b"J,sigma\n8,-inf\n8,1\n", "is -inf (not finite)"),
    ("1e400-cell", "d.csv", b"J,sigma\n8,1e400\n8,1\n", "is inf (not finite)"),
    ("missing-cell", "d.csv", b"J,sigma\n8,\n8,1\n", "column `sigma` has 1 missing values"),
    ("100-digit-integer", "d.csv", b"J,sigma\n" + b"9" * 100 + b",1\n8,1\n",
     "column `J` is not numeric"),
    ("text-column", "d.csv", b"J,sigma\n8,a\n8,b\n", "column `sigma` is not numeric"),
    ("code-as-a-column", "d.csv", f"J,sigma,{CODE}\n8,1,1\n".encode(),
     "is not a Python identifier"),
    ("100k-character-column", "d.csv", b"J," + b"s" * 100_000 + b"\n8,1\n",
     "a column name is 100000 characters"),
    ("10001-columns", "d.csv", ",".join(f"c{i}" for i in range(10_001)).encode() + b"\n"
     + b",".join([b"1"] * 10_001) + b"\n", "10001 columns; at most 10000"),
    ("binary", "d.csv", b"J,sigma\n8,1\x00\x01\x02\n", "not a CSV file (it holds binary data)"),
    ("gzip", "d.csv", gzip.compress(b"J,sigma\n8,1\n"), "not a CSV file (it holds binary data)"),
    ("empty", "d.csv", b"", "the file is empty"),
    ("header-only", "d.csv", b"J,sigma\n", "the data set has no rows"),
    ("unterminated-quote", "d.csv", b'J,sigma\n8,"1\n', "not a readable CSV file"),
]  # fmt: skip

LINREG = ("submit", "fit", "--model", "linreg", "--formula", "y ~ x", "--data")
LINREG_DATA: list[Case] = [
    ("100k-character-column", "d.csv", b"y,x," + b"c" * 100_000 + b"\n1,2,3\n3,4,5\n",
     "a column name is 100000 characters"),
    ("every-row-infinite", "d.csv", b"y,x\ninf,1\n2,inf\nnan,3\n", "no rows left for `y ~ x`"),
    ("json-as-csv", "d.csv", b'{"y": [1, 2], "x": [1, 2]}', "it looks like JSON"),
    ("utf-16", "d.csv", "y,x\n1,2\n3,4\n".encode("utf-16"), "it holds binary data"),
    ("missing-column", "d.csv", b"y,z\n1,2\n3,4\n", "column `x` not in data"),
    ("10001-columns", "d.csv", b"y,x," + ",".join(f"c{i}" for i in range(9_999)).encode()
     + b"\n" + b",".join([b"1"] * 10_001) + b"\n", "10001 columns; at most 10000"),
]  # fmt: skip


def _grouped(value: str) -> bytes:
    """A CSV whose rows fall into two groups by `g`: `b`, and `value` (after 8 KB of rows,
    so the binary sniff of the first bytes does not see it)."""
    rows = [f"{i},{i * 3 % 7},b" for i in range(2000)]
    rows += [f"{i},{i % 5},{value}" for i in range(9)]
    return ("y,x,g\n" + "\n".join(rows) + "\n").encode()


SWEEP = ("submit", "sweep", "--model", "linreg", "--formula", "y ~ x", "--group-by", "g",
         "--data")  # fmt: skip
GROUPED: list[Case] = [
    ("group-value-300-characters", "d.csv", _grouped("a" * 300), "is not a group name"),
    ("group-value-with-a-nul", "d.csv", _grouped("a\x00b"), "is not a group name"),
    ("group-value-with-a-line-break", "d.csv", _grouped('"a\nb"'), "is not a group name"),
    ("group-of-one-row", "d.csv", b"y,x,g\n1,2,a\n2,3,a\n3,4,b\n", "group b has 1 usable row"),
]


@pytest.fixture(scope="module")
def user_fit(target: Target) -> Iterator[tuple[Target, str]]:
    """A queued fit of the eight schools model, to predict from with new data."""
    fit = offline_client(target.stack).submit_model(
        SCHOOLS_PY, EXAMPLES / "eight_schools.json", steps=5, seed=1
    )
    target.settle()
    yield target, fit


def _submit(
    target: Target, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: Case,
    command: tuple[str, ...],
) -> None:  # fmt: skip
    for key, value in (case[4] if len(case) == 5 else {}).items():
        monkeypatch.setenv(key, value)
    data = tmp_path / case[1]
    data.write_bytes(case[2].replace(b"{M}", str(target.marker).encode()))
    target.refuse((*command, str(data)), case[3])


@pytest.mark.parametrize("case", JSON_DATA + CSV_DATA, ids=[c[0] for c in JSON_DATA + CSV_DATA])
def test_a_hostile_data_file_for_a_users_model_is_refused(
    target: Target, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: Case
) -> None:
    _submit(target, monkeypatch, tmp_path, case,
            ("submit", "fit", "--model", f"{SCHOOLS_PY}:model", "--data"))  # fmt: skip


@pytest.mark.parametrize("case", LINREG_DATA, ids=[c[0] for c in LINREG_DATA])
def test_a_hostile_csv_for_linreg_is_refused(
    target: Target, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: Case
) -> None:
    _submit(target, monkeypatch, tmp_path, case, LINREG)


PREDICT_DATA = [c for c in JSON_DATA if c[0] in ("infinity", "5000-digit-integer",
                                                  "nested-5000-deep", "repeated-name",
                                                  "dunder-name")]  # fmt: skip


@pytest.mark.parametrize("case", GROUPED, ids=[c[0] for c in GROUPED])
def test_a_hostile_group_in_a_sweeps_data_is_refused(
    target: Target, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: Case
) -> None:
    _submit(target, monkeypatch, tmp_path, case, SWEEP)


@pytest.mark.parametrize("case", PREDICT_DATA, ids=[c[0] for c in PREDICT_DATA])
def test_hostile_new_data_to_predict_from_a_users_fit_is_refused(
    user_fit: tuple[Target, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: Case
) -> None:
    target, fit = user_fit
    _submit(target, monkeypatch, tmp_path, case, ("submit", "predict", "--from", fit, "--data"))


def test_a_json_file_past_the_json_cap_is_refused_before_it_is_parsed(
    target: Target, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """json.loads needs about ten times a file's size: JSON data has a cap of its own."""
    import kiln.userdata

    monkeypatch.setattr(kiln.userdata, "MAX_JSON_BYTES", 30)
    _submit(target, monkeypatch, tmp_path, ("json-past-its-cap", "d.json", _obj(""),
                                            "bytes of JSON; at most 30"),
            ("submit", "fit", "--model", f"{SCHOOLS_PY}:model", "--data"))  # fmt: skip

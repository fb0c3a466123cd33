"""Users' model files: errors that point at their lines, and JSON data to tensors."""

from __future__ import annotations

import inspect
import sys
import textwrap

import numpy as np
import pytest
import torch

from inference.usercode import describe_exception, get_function, load_module, to_tensors
from kiln.errors import DataError, ModelError


def source(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_syntax_error_names_the_file_line_and_text() -> None:
    with pytest.raises(ModelError) as caught:
        load_module(source("x = 1\n\ny = = 2\n"), "my_models.py")
    assert str(caught.value) == "my_models.py line 3: invalid syntax: y = = 2"


def test_error_while_importing_names_the_exception_and_the_users_line() -> None:
    text = source("""
        import math

        def helper():
            return x

        value = helper()
    """)
    with pytest.raises(ModelError) as caught:
        load_module(text, "my_models.py")
    assert str(caught.value) == (
        "my_models.py failed to import: NameError: name 'x' is not defined (line 4)"
    )


def test_loaded_module_is_registered_so_inspect_shows_the_users_source() -> None:
    text = source("""
        def model(J):
            return J + 1
    """)
    module = load_module(text, "my_models.py")
    assert module.__name__.startswith("kiln_user_") and sys.modules[module.__name__] is module
    assert get_function(module, "model", "my_models.py")(J=1) == 2
    assert inspect.getsource(module.model) == text


def test_missing_function_lists_the_functions_the_file_defines() -> None:
    text = source("""
        import torch

        SCALE = 3.0

        def a():
            pass

        def b():
            pass
    """)
    module = load_module(text, "my_models.py")
    with pytest.raises(ModelError) as caught:
        get_function(module, "model", "my_models.py")
    assert str(caught.value) == "my_models.py has no function `model` (it defines: a, b)"
    with pytest.raises(ModelError, match=r"`SCALE` is a float; it defines: a, b"):
        get_function(module, "SCALE", "my_models.py")


def test_describe_exception_quotes_the_deepest_line_of_the_users_file() -> None:
    text = source("""
        def lookup(data):
            return data['tau']

        def model(data):
            tau = lookup(data)
            return tau
    """)
    module = load_module(text, "my_models.py")
    with pytest.raises(KeyError) as caught:
        module.model({})
    assert describe_exception(caught.value, "my_models.py") == (
        "KeyError: 'tau' at my_models.py line 2: `return data['tau']`"
    )


def test_describe_exception_quotes_the_version_that_ran_after_a_same_named_file() -> None:
    old = load_module(source("def model():\n    return 1 / 0\n"), "m.py")
    load_module(source("def model():\n    return 2\n"), "m.py")
    with pytest.raises(ZeroDivisionError) as caught:
        old.model()
    assert describe_exception(caught.value, "m.py") == (
        "ZeroDivisionError: division by zero at m.py line 2: `return 1 / 0`"
    )


def test_to_tensors_keeps_scalars_and_types_lists_by_their_numbers() -> None:
    data = {
        "J": 8, "scale": 2.5, "flag": True,
        "y": [28, 8, -3], "sigma": [15.0, 10, 16], "mask": [True, False],
        "X": [[1, 2, 3], [4, 5, 6]], "empty": [], "a": np.array([1.5, 2.0], dtype=np.float32),
    }  # fmt: skip
    out = to_tensors(data)
    assert out["J"] == 8 and type(out["J"]) is int
    assert type(out["scale"]) is float and out["flag"] is True
    assert out["y"].dtype == torch.int64 and out["y"].tolist() == [28, 8, -3]
    assert out["sigma"].dtype == torch.float64
    assert out["mask"].dtype == torch.bool
    assert out["X"].shape == (2, 3) and out["X"].dtype == torch.int64
    assert out["empty"].shape == (0,) and out["empty"].dtype == torch.float64
    assert out["a"].dtype == torch.float64
    torch.testing.assert_close(out["a"], torch.tensor([1.5, 2.0], dtype=torch.float64))


def test_dtypes_override_what_the_numbers_say() -> None:
    out = to_tensors({"y": [1, 2], "J": 3, "z": [0.5]}, dtypes={"y": "float32", "J": "float64"})
    assert out["y"].dtype == torch.float32
    assert out["J"].dtype == torch.float64 and out["J"].shape == ()
    assert out["z"].dtype == torch.float64
    with pytest.raises(DataError, match=r"DTYPES\['y'\]: unknown dtype 'double'"):
        to_tensors({"y": [1]}, dtypes={"y": "double"})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1, 2, 3], [4, 5]], "data field `y`: ragged nested list (rows of length 3 and 2)"),
        ([[1, 2], 3], "data field `y`: ragged nested list (a list next to a number)"),
        ([1, [2, 3]], "data field `y`: ragged nested list (a number next to a list)"),
        ("abc", "data field `y`: a string is not a number (got 'abc')"),
        ([1, "2"], "data field `y`: a string is not a number (got '2') in a list"),
        (None, "data field `y`: null is not a number (leave the field out, or use a number)"),
        ({"a": 1}, "data field `y`: a nested object is not a number or a list of numbers"),
    ],
)
def test_unusable_data_names_the_field(value: object, message: str) -> None:
    with pytest.raises(DataError) as caught:
        to_tensors({"J": 2, "y": value})
    assert str(caught.value) == message and caught.value.column == "y"

"""The formula grammar: column names, numbers, formula operators and an allow-list of transforms.

formulaic evaluates the terms of a formula as Python, so a formula is user code unless it is
checked first. `check_formula` admits only: column names (as bare names), numeric literals, the
operators of the formula language (`~ + - * / : ** ^ | ( ) ,`), and calls of the transforms in
TRANSFORMS (or their `np.` spellings) whose arguments are themselves admitted. No attribute
access (beyond `np.<transform>`), subscripts, strings, keyword arguments, lambdas, Python
blocks (`{...}`), quoted names or dunder names. `FORMULA_CONTEXT` is all a formula can reach.
"""

from __future__ import annotations

import io
import keyword
import tokenize
from types import SimpleNamespace
from typing import Any

import numpy as np

from kiln.errors import SpecError

MAX_FORMULA_CHARS = 2_000
# Transforms a formula may call, by name; formulaic supplies C, I, center and scale itself.
NUMPY_TRANSFORMS: dict[str, Any] = {
    "log": np.log,
    "log1p": np.log1p,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
}
TRANSFORMS = frozenset({*NUMPY_TRANSFORMS, "C", "I", "center", "scale"})
# What formulaic's evaluation of a term can see besides the data's columns: these callables,
# and `np` as a namespace holding the same ones (not the numpy module).
FORMULA_CONTEXT: dict[str, Any] = {**NUMPY_TRANSFORMS, "np": SimpleNamespace(**NUMPY_TRANSFORMS)}
OPERATORS = frozenset({"~", "+", "-", "*", "/", ":", "**", "^", "|", "(", ")", ","})
_SKIP = {tokenize.ENCODING, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT,
         tokenize.DEDENT}  # fmt: skip


def _refuse(formula: str, what: str) -> SpecError:
    return SpecError(
        f"formula `{_short(formula)}`: {what}; a formula may use column names, numbers,"
        f" + - * / : ** ^ | ~ ( ) and the transforms {', '.join(sorted(TRANSFORMS))}"
        " (also as np.log etc.)",
        field="formula",
    )


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tokens(formula: str) -> list[tokenize.TokenInfo]:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(formula).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError) as e:
        raise _refuse(formula, f"it does not parse ({e.args[0]})") from None
    return [t for t in tokens if t.type not in _SKIP]


def check_formula(formula: str) -> None:
    """Raise SpecError, naming what is not allowed, unless `formula` keeps to the grammar.

    Bare names are left to the caller, which says which are not columns of the data.
    """
    if len(formula) > MAX_FORMULA_CHARS:
        raise SpecError(
            f"formula: at most {MAX_FORMULA_CHARS} characters (got {len(formula)})",
            field="formula",
        )
    if "\n" in formula or "\r" in formula:
        raise _refuse(formula, "it spans lines")
    if "`" in formula:
        raise _refuse(formula, "a backtick-quoted name is not allowed (rename the column)")
    tokens = _tokens(formula)
    depth = 0
    i = 0
    while i < len(tokens):
        token = tokens[i]
        after = tokens[i + 1].string if i + 1 < len(tokens) else ""
        if token.type == tokenize.NUMBER:
            if not _plain_number(token.string):
                raise _refuse(formula, f"`{token.string}` is not a plain number")
        elif token.type == tokenize.NAME:
            name = token.string
            if name.startswith("__") or keyword.iskeyword(name) or (name == "np" and after != "."):
                raise _refuse(formula, f"`{name}` is not allowed")
            if name == "np":
                call = tokens[i + 2].string if i + 2 < len(tokens) else ""
                follows = tokens[i + 3].string if i + 3 < len(tokens) else ""
                if call not in NUMPY_TRANSFORMS or follows != "(":
                    raise _refuse(formula, f"`np.{call}` is not an allowed transform")
                i += 2
                continue
            if after == "(":
                if name not in TRANSFORMS:
                    raise _refuse(formula, f"`{name}(...)` is not an allowed transform")
            elif after == "." or after == "[":
                raise _refuse(formula, f"`{name}{after}` (attribute or subscript) is not allowed")
            elif after == "=":
                raise _refuse(formula, f"`{name}=` (a keyword argument) is not allowed")
        elif token.type == tokenize.OP:
            if token.string not in OPERATORS:
                raise _refuse(formula, f"`{token.string}` is not allowed")
            depth += {"(": 1, ")": -1}.get(token.string, 0)
            if depth < 0:
                raise _refuse(formula, "it does not parse (a `)` closes nothing)")
        else:
            if token.type == tokenize.ERRORTOKEN and not token.string.strip():
                i += 1
                continue
            what = "a string" if token.type == tokenize.STRING else f"`{token.string}`"
            raise _refuse(formula, f"{what} is not allowed")
        i += 1


def _plain_number(text: str) -> bool:
    """Decimal literals only (no 1j, no 0x..., no huge exponents)."""
    cleaned = text.replace("_", "")
    if not cleaned or any(c in cleaned.lower() for c in "jxob"):
        return False
    try:
        value = float(cleaned)
    except ValueError:
        return False
    return bool(np.isfinite(value)) and len(cleaned) <= 32

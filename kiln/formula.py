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
MAX_POWER = 100  # the largest exponent after ** or ^
MAX_TERMS = 512  # design columns of a formula (each is a site of a linreg fit)
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


def check_powers(formula: str) -> None:
    """A power's exponent is a plain number up to MAX_POWER (a sign allowed), and powers are
    not chained: inside I(...) Python computes `10 ** 99999999` or `9 ** 9 ** 9 ** 9` as an
    exact integer, which takes minutes or never ends; outside, formulaic expands the terms."""
    import tokenize

    try:
        tokens = [
            t
            for t in tokenize.generate_tokens(io.StringIO(formula).readline)
            if t.type in (tokenize.OP, tokenize.NUMBER, tokenize.NAME)
        ]
    except (tokenize.TokenError, SyntaxError):
        return  # check_formula has tokenised it already; formulaic will say what is wrong
    for i, token in enumerate(tokens):
        if token.string not in ("**", "^"):
            continue
        j = i + 1 + (i + 1 < len(tokens) and tokens[i + 1].string in ("-", "+"))
        exponent = tokens[j] if j < len(tokens) else None
        chained = j + 1 < len(tokens) and tokens[j + 1].string in ("**", "^")
        if (
            exponent is None
            or exponent.type != tokenize.NUMBER
            or len(exponent.string) > 10
            or float(exponent.string.rstrip("jJ") or 0) > MAX_POWER
            or chained
        ):
            raise SpecError(
                f"formula `{formula[:80]}`: the power after `{token.string}` must be a plain"
                f" number up to {MAX_POWER}, not chained (`a ** b ** c`)",
                field="formula",
            )


def check_expansion(formula: str, columns: int) -> None:
    """Refuse a formula whose operators expand into more than MAX_TERMS terms, from its syntax
    tree alone: formulaic forms every product of a power before it drops repeats, so
    `(a+b+c+d+e+f+g+h)**8` (8**8 products) would take minutes, `x ** 99999999999` forever."""
    from formulaic.parser import DefaultFormulaParser

    if _expansion(DefaultFormulaParser().get_ast(formula), columns) > MAX_TERMS:
        raise SpecError(
            f"formula `{formula[:80]}` expands into more than {MAX_TERMS} terms (the products"
            " of `*`, `:`, `/`, `**` and `^`); use fewer terms or a lower power",
            field="formula",
        )


def _expansion(node: object, columns: int) -> int:
    """An upper bound on the terms (and the products formulaic forms to find them) of a node
    of formulaic's syntax tree; anything above MAX_TERMS is returned as MAX_TERMS + 1."""
    operator = getattr(node, "operator", None)
    if operator is None:
        return 1  # a name, a number, a call
    args: list[object] = list(getattr(node, "args", []))
    symbol = str(getattr(operator, "symbol", ""))
    over = MAX_TERMS + 1
    if symbol == ".":  # every column
        return min(columns, over)
    if symbol in ("**", "^") and len(args) == 2:
        base, exponent = _expansion(args[0], columns), _whole_number(args[1])
        total, product = 0, 1
        for _ in range(exponent):
            product, total = product * base, total + product * base
            if total > MAX_TERMS:
                return over
        return max(total, 1)
    sizes = [_expansion(a, columns) for a in args]
    if symbol in ("+", "-", "~", "|"):
        return min(sum(sizes), over)
    product = 1
    for size in sizes:
        product = min(product * size, over)
    return min(sum(sizes) + product, over)  # `*`, `/`, `:`, `%in%`: the factors and products


def _whole_number(token: object) -> int:
    text = str(token).strip()
    if not text.isdigit() or len(text) > 6:  # `**` wants a small positive whole number
        return MAX_TERMS + 1
    return int(text)

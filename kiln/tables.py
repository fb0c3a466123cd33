"""Data tables: CSV bytes -> DataFrame, and formula + table -> design matrix, naming what is wrong.

Pure pandas/formulaic (no torch), so the scheduler validates a submission with the same code the
worker later uses to build tensors.
"""

from __future__ import annotations

import dataclasses
import io
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kiln.errors import DataError, SpecError
from kiln.formula import (
    FORMULA_CONTEXT,
    MAX_TERMS,
    check_expansion,
    check_formula,
    check_powers,
)

MAX_COLUMNS = 10_000
MAX_COLUMN_NAME = 255  # characters: a column is a formula term, and so a site name
MAX_DESIGN_VALUES = 100_000_000  # rows x design columns (800 MB of float64)


@dataclass(frozen=True, slots=True)
class Design:
    """A response vector and a design matrix built from a formula, and what was dropped."""

    y: np.ndarray  # (rows,) float64
    X: np.ndarray  # (rows, terms) float64
    response: str
    terms: tuple[str, ...]
    rows_used: int
    rows_dropped: int
    row_index: np.ndarray  # positions (0-based) of the used rows in the original table
    has_response: bool = True  # False: new rows to predict, `y` all NaN

    @property
    def facts(self) -> dict[str, object]:
        """What a job records about the data it fitted: rows used and dropped, terms, response."""
        return {
            "rows_used": self.rows_used,
            "rows_dropped": self.rows_dropped,
            "terms": list(self.terms),
            "response": self.response,
        }


def read_csv_bytes(content: bytes, name: str = "data") -> pd.DataFrame:
    """Parse CSV bytes (UTF-8, falling back to ISO-8859-1); raise DataError on anything else."""
    if not content.strip():
        raise DataError(f"{name}: the file is empty; give a CSV file with a header row and data")
    if b"\x00" in content[:8192]:
        raise DataError(f"{name}: not a CSV file (it holds binary data)")
    for encoding in ("utf-8", "ISO-8859-1"):
        try:
            frame = pd.read_csv(io.BytesIO(content), encoding=encoding)
            break
        except UnicodeDecodeError:
            continue
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
            raise DataError(f"{name}: not a readable CSV file ({str(e).strip()})") from e
    else:  # pragma: no cover - ISO-8859-1 decodes every byte
        raise DataError(f"{name}: cannot decode the file as text")
    if content.lstrip()[:1] in (b"{", b"["):
        raise DataError(f"{name}: not a CSV file (it looks like JSON)")
    if len(frame.columns) == 0 or frame.empty:
        raise DataError(f"{name}: the data set has no rows; give a CSV file with data rows")
    if len(frame.columns) > MAX_COLUMNS:
        raise DataError(f"{name}: {len(frame.columns)} columns; at most {MAX_COLUMNS}")
    for column in frame.columns:
        # a column name becomes a formula term and a site name (params.site is 255 characters)
        if len(str(column)) > MAX_COLUMN_NAME:
            raise DataError(
                f"{name}: a column name is {len(str(column))} characters"
                f" (`{str(column)[:40]}...`); at most {MAX_COLUMN_NAME}",
                column=str(column)[:40],
            )
    return frame


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _plain(error: Exception) -> str:
    """An exception's text without terminal colours, on one line."""
    return " ".join(_ANSI.sub("", str(error)).split())


def _column_list(columns: list[str], limit: int = 12, near: str | None = None) -> str:
    """The columns, the first `limit` of them; with `near`, those spelt like it first."""
    import difflib

    close = difflib.get_close_matches(near, columns, n=3, cutoff=0.6) if near else []
    hint = f"did you mean {' or '.join(f'`{c}`' for c in close)}? " if close else ""
    shown = ", ".join(columns[:limit])
    more = f", ... ({len(columns)} in all)" if len(columns) > limit else ""
    return f"{hint}have: {shown}{more}"


def build_design(
    frame: pd.DataFrame,
    formula: str,
    *,
    reference: pd.DataFrame | None = None,
    require_response: bool = True,
) -> Design:
    """Evaluate `formula` (formulaic syntax, `y ~ terms`) on `frame`.

    With `reference` (the table a model was fitted on), the right-hand side is built with the
    reference's encoding (same terms, same categorical levels, same column order), so new rows
    line up with the fitted coefficients. With require_response=False the response column may be
    absent; `y` is then all NaN and `has_response` False.

    Rows with a missing or non-finite value in a used column are dropped and counted.
    Raises SpecError for a formula that does not parse, DataError for a missing column or
    when no row is left.
    """
    import formulaic
    from formulaic.errors import FormulaicError

    check_formula(formula)  # before formulaic reads it (it evaluates terms as Python)
    try:
        check_powers(formula)  # before Python computes 9 ** 9 ** 9 ** 9 inside I(...)
        check_expansion(formula, len(frame.columns))  # before formulaic expands the terms
        parsed = formulaic.Formula(formula)
    except (FormulaicError, SyntaxError, ValueError) as e:
        raise SpecError(f"formula `{formula}` does not parse: {_plain(e)}", field="formula") from e
    if not hasattr(parsed, "lhs") or not hasattr(parsed, "rhs"):
        raise SpecError(
            f"formula `{formula}` has no response; write it as `y ~ x1 + x2`", field="formula"
        )
    if not hasattr(parsed.rhs, "required_variables"):  # `|` splits a formula into parts
        raise SpecError(
            f"formula `{formula}` has several parts (`|`); a fit takes one right-hand side",
            field="formula",
        )
    _check_design_size(formula, parsed.rhs, frame)
    columns = [str(c) for c in frame.columns]

    def absent(variables: set[str]) -> list[str]:
        return sorted(v for v in variables if v not in columns and v not in FORMULA_CONTEXT)

    missing = absent(parsed.rhs.required_variables)
    lhs_missing = absent(parsed.lhs.required_variables)
    if require_response:
        missing = sorted({*missing, *lhs_missing})
    if missing:
        raise DataError(
            f"column `{missing[0]}` not in data ({_column_list(columns, near=missing[0])})",
            column=missing[0],
        )
    has_response = not lhs_missing
    indexed = frame.set_axis(pd.RangeIndex(len(frame)))
    try:
        if reference is None:
            matrices = formulaic.model_matrix(formula, indexed, context=FORMULA_CONTEXT)
            lhs, rhs = matrices.lhs, matrices.rhs
        else:
            fitted = formulaic.model_matrix(
                formula, reference.set_axis(pd.RangeIndex(len(reference))), context=FORMULA_CONTEXT
            )
            rhs = fitted.rhs.model_spec.get_model_matrix(indexed, context=FORMULA_CONTEXT)
            lhs = (
                fitted.lhs.model_spec.get_model_matrix(indexed, context=FORMULA_CONTEXT)
                if has_response
                else None
            )
    except FormulaicError as e:
        raise SpecError(
            f"formula `{formula}` cannot be evaluated: {_plain(e)}", field="formula"
        ) from e
    except (TypeError, ValueError, ArithmeticError) as e:  # I(1/0), I(2 ** 100): numbers
        raise SpecError(
            f"formula `{formula[:80]}` cannot be evaluated: {type(e).__name__}: {_plain(e)[:200]}",
            field="formula",
        ) from e
    if lhs is not None and lhs.shape[1] != 1:
        raise SpecError(
            f"formula `{formula}` must have exactly one response column (got {lhs.shape[1]})",
            field="formula",
        )
    try:
        X_frame = pd.DataFrame(np.asarray(rhs, dtype=np.float64), index=rhs.index)
        if lhs is not None:
            y_series = pd.Series(np.asarray(lhs, dtype=np.float64)[:, 0], index=lhs.index)
        else:
            y_series = pd.Series(np.nan, index=rhs.index)
    except (TypeError, ValueError) as e:
        raise DataError(f"formula `{formula}`: a used column is not numeric ({e})") from e
    # formulaic drops rows with missing values on each side on its own: keep rows on both.
    # To predict, a row needs its covariates only; an unknown response stays NaN.
    index = rhs.index if not require_response else rhs.index.intersection(y_series.index)
    X = X_frame.loc[index].to_numpy()
    y = y_series.reindex(index).to_numpy()
    index = np.asarray(index, dtype=np.int64)
    finite = np.isfinite(X).all(axis=1) & (np.isfinite(y) if require_response else True)
    y, X, index = y[finite], X[finite], index[finite]
    if len(y) == 0:
        raise DataError(
            f"no rows left for `{formula}` after dropping rows with missing or non-finite values"
            f" ({len(frame)} rows in the data)"
        )
    response = str(lhs.columns[0]) if lhs is not None else str(parsed.lhs)
    return Design(
        y=y,
        X=X,
        response=response,
        terms=tuple(str(c) for c in rhs.columns),
        rows_used=len(y),
        rows_dropped=len(frame) - len(y),
        row_index=index,
        has_response=lhs is not None,
    )


def _check_design_size(formula: str, rhs: Any, frame: pd.DataFrame) -> None:
    """Refuse a design of more than MAX_TERMS columns or MAX_DESIGN_VALUES numbers before it is
    built: a text column (or C(...)) makes a column per distinct value, so `y ~ id` on a
    million distinct ids would ask for a million-by-million matrix."""
    levels: dict[str, int] = {}

    def width(factor: Any) -> int:
        expr = str(getattr(factor, "expr", ""))
        name = expr
        if expr.startswith("C(") and expr.endswith(")"):
            name = re.split(r"[,)]", expr[2:], maxsplit=1)[0].strip()
        elif getattr(getattr(factor, "eval_method", None), "value", "") != "lookup":
            return 1
        if name not in frame.columns:
            return 1
        if name not in levels:
            column = frame[name]
            text = column.dtype.kind not in "iufc" or expr.startswith("C(")
            levels[name] = int(column.nunique()) if text else 1
        return max(levels[name], 1)

    total = 0
    for term in rhs:
        size = 1
        for factor in getattr(term, "factors", ()):
            size *= width(factor)
        total += size
    if total > MAX_TERMS:
        raise SpecError(
            f"formula `{formula[:80]}` makes about {total} design columns (a text column or"
            f" C(...) makes one per distinct value); at most {MAX_TERMS}",
            field="formula",
        )
    if total * len(frame) > MAX_DESIGN_VALUES:
        raise SpecError(
            f"formula `{formula[:80]}` on {len(frame)} rows makes a design of about"
            f" {total * len(frame)} numbers; at most {MAX_DESIGN_VALUES}",
            field="formula",
        )


def group_values(frame: pd.DataFrame, column: str) -> list[str]:
    """The distinct non-missing values of `column`, as text (how a sweep names its groups)."""
    if column not in frame.columns:
        raise DataError(
            f"--group-by column `{column}` not in data"
            f" ({_column_list([str(c) for c in frame.columns], near=column)})",
            column=column,
        )
    values = frame[column].dropna()
    return sorted({_as_text(v) for v in values}, key=_natural)


def _as_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _natural(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


def group_rows(frame: pd.DataFrame, column: str, group: str) -> pd.DataFrame:
    """The rows whose `column` value, as text, is `group`."""
    if column not in frame.columns:
        raise DataError(f"group_by column `{column}` not in data", column=column)
    keep = np.array([v == v and _as_text(v) == group for v in frame[column]], dtype=bool)
    if not keep.any():
        raise DataError(f"no row has {column} = {group}", column=column)
    return frame[keep]


def member_design(
    frame: pd.DataFrame,
    formula: str,
    *,
    group_by: str | None = None,
    group: str | None = None,
    bootstrap: int | None = None,
    bootstrap_seed: int | None = None,
) -> tuple[Design, np.ndarray]:
    """The design a sweep member is fitted on, and how often each of its rows counts.

    A group keeps the rows whose `group_by` value (as text) is `group`; the formula is then
    evaluated on those rows alone, as a fit of that group's table would. Bootstrap replicate
    `bootstrap` of seed `bootstrap_seed` draws as many rows as there are, with replacement:
    counts (rows,) from a multinomial, reproducible from (seed, replicate) alone. Without a
    resample every count is 1. `row_index` stays the rows' positions in the whole table.
    """
    positions = np.arange(len(frame))
    if group_by is not None:
        if group is None:
            raise SpecError("a member with group_by needs its group value", field="group")
        kept = group_rows(frame.set_axis(pd.RangeIndex(len(frame))), group_by, group)
        frame, positions = kept, positions[kept.index.to_numpy()]
    design = build_design(frame, formula)
    design = dataclasses.replace(design, row_index=positions[design.row_index])
    return design, bootstrap_counts(design.rows_used, bootstrap, bootstrap_seed)


def bootstrap_counts(rows: int, bootstrap: int | None, bootstrap_seed: int | None) -> np.ndarray:
    """How often each of `rows` rows is drawn by replicate `bootstrap` of `bootstrap_seed`
    (all ones without a replicate)."""
    if bootstrap is None:
        return np.ones(rows, dtype=np.int64)
    if bootstrap_seed is None or bootstrap < 0:
        raise SpecError("a bootstrap member needs its replicate number and seed", "bootstrap")
    rng = np.random.default_rng([int(bootstrap_seed), int(bootstrap)])
    return rng.multinomial(rows, np.full(rows, 1.0 / rows)).astype(np.int64)

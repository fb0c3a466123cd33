"""Card of `hmm` (a Gaussian hidden Markov model) and the CSV -> 1-D series it is fitted to.

By default, on the Ethereum file (Date and Close columns): the daily % change of Close, whose
regimes are calm and volatile stretches; on any other file: its first numeric column.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kiln.errors import DataError, SpecError
from kiln.library.cards import DataRef, ModelCard, register
from kiln.library.forecast import (
    daily_changes,
    numeric_cells,
    parse_dates,
    read_table,
    require_columns,
    usable_daily_rows,
)

__all__ = ["HMM", "HmmSeries", "check_hmm", "read_hmm_series"]

MAX_STATES = 10
MIN_POINTS_PER_STATE = 10


@dataclass(frozen=True)
class HmmSeries:
    """The series in time order; `days` (days since 1970-01-01) when the file has dates."""

    values: np.ndarray  # (T,) float64
    days: np.ndarray | None  # (T,) int64
    facts: dict[str, Any]  # rows, column, series, dropped (reason -> rows), T, ...


def read_hmm_series(content: bytes | None, *, column: str = "", name: str = "data") -> HmmSeries:
    """The column to fit, without its missing cells (dropped rows counted by reason).

    column "": with Date and Close columns, the daily % change of Close (sorted by date; a
    change needs the calendar day before); else the first column that holds only numbers
    and missing cells. A named column is taken as it is, sorted by Date when there is one.
    """
    frame = read_table(content, name)
    if not column and {"Date", "Close"} <= set(frame.columns):
        rows, facts = usable_daily_rows(frame, ("Close",), name)
        days, changes = daily_changes(rows, ("Close",))
        keep = np.isfinite(changes[:, 0])
        values, days = changes[keep, 0], days[keep]
        facts.update(column="Close", series="daily % change of Close",
                     days_lost=int(facts["rows_used"] - keep.sum()))  # fmt: skip
    else:
        column = column or _first_numeric(frame, name)
        require_columns(frame, (column,), name)
        values, reasons = numeric_cells(frame, column)
        why = [f"{column} {r}" if r else "" for r in reasons]
        days = None
        if "Date" in frame.columns:
            dates = parse_dates(frame)
            if dates.notna().any():
                why = [
                    w or ("Date unreadable" if pd.isna(d) else "")
                    for w, d in zip(why, dates, strict=True)
                ]
                order = np.argsort(dates.to_numpy(), kind="stable")
                values, why = values[order], [why[i] for i in order]
                days = dates.to_numpy()[order].astype("datetime64[D]").astype(np.int64)
        keep = np.array([w == "" for w in why], dtype=bool)
        dropped = Counter(w for w in why if w)
        values = values[keep]
        days = days[keep] if days is not None else None
        facts = {
            "rows": int(len(frame)),
            "columns": [str(c) for c in frame.columns],
            "rows_used": int(keep.sum()),
            "rows_dropped": int(sum(dropped.values())),
            "dropped": dict(sorted(dropped.items())),
            "column": column,
            "series": f"{column} as given",
        }
    facts["T"] = int(values.size)
    if days is not None and values.size:
        facts["from"] = str(np.datetime64(int(days[0]), "D"))
        facts["to"] = str(np.datetime64(int(days[-1]), "D"))
    if values.size and float(np.std(values)) == 0.0:
        raise DataError(f"`{name}`: column `{facts['column']}` is constant", column=facts["column"])
    return HmmSeries(values=values, days=days, facts=facts)


def _first_numeric(frame: pd.DataFrame, name: str) -> str:
    for column in frame.columns:
        values, reasons = numeric_cells(frame, column)
        if np.isfinite(values).any() and "not a number" not in reasons:
            return str(column)
    raise DataError(f"`{name}` has no numeric column (have: {', '.join(frame.columns)})")


def check_hmm(options: Mapping[str, Any], data: DataRef) -> dict[str, Any]:
    """Submit-time check of an hmm job: states in 2..10, steps and lr positive, a CSV with the
    column and at least 10 points per state. Returns the series' facts plus `steps`."""
    if data.kind != "csv":
        raise SpecError(
            f"`hmm` takes --data FILE.csv (got {data.kind} `{data.name}`)", field="data"
        )
    states = int(options["states"])
    if not 2 <= states <= MAX_STATES:
        raise SpecError(f"--set states={states}: between 2 and {MAX_STATES}", field="options")
    if int(options["steps"]) < 1:
        raise SpecError(f"--set steps={options['steps']}: must be at least 1", field="options")
    if float(options["lr"]) <= 0:
        raise SpecError(f"--set lr={options['lr']}: must be > 0", field="options")
    series = read_hmm_series(data.content, column=str(options["column"]), name=data.name)
    need = MIN_POINTS_PER_STATE * states
    if series.values.size < need:
        raise SpecError(
            f"--set states={states}: `{data.name}` has {series.values.size} usable points"
            f" (need {need}); try fewer states",
            field="options",
        )
    return {**series.facts, "states": states, "steps": int(options["steps"])}


HMM = register(
    ModelCard(
        name="hmm",
        summary="Gaussian hidden Markov model with `states` regimes, states summed out exactly;"
        " by default the volatility regimes of ETH's daily returns",
        defaults={"states": 2, "column": "", "steps": 500, "lr": 0.05},
        data=("csv",),
        check=check_hmm,
    )
)

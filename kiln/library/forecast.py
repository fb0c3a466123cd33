"""Cards of `forecast-linreg` and `forecast-bnn`, and the daily CSV -> (window, next day) arrays.

Tomorrow's % change of Close from the previous `window` days of % changes of Close, Volume
and Tweets (the Ethereum file of shared/data). Torch-free: the scheduler checks a submission
with the same reader that the worker uses to build the tensors.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kiln.errors import DataError, SpecError
from kiln.library.cards import DataRef, ModelCard, register

__all__ = [
    "FORECAST_BNN",
    "FORECAST_LINREG",
    "ForecastData",
    "check_forecast",
    "read_forecast_data",
    "read_table",
]

SERIES = ("Close", "Volume", "Tweets")  # feature order: all of Close's days, then Volume's, ...
TARGET = "Close"
# Cell texts that mean "no value", by the reason a dropped row is counted under.
MISSING = {"": "empty", "null": "null", "nan": "null", "na": "null", "n/a": "null", "none": "null",
           "-": "dash", "--": "dash"}  # fmt: skip
DATE_FORMAT = "%b %d %Y"  # "Jan 21 2018", the Ethereum file's; anything else pandas can read
MIN_TRAIN = 10  # training days besides the 3 * window + 1 a linear fit needs


@dataclass(frozen=True)
class ForecastData:
    """(window, next day) examples in time order: features are % changes of SERIES over the
    `window` days before the target day, series-major (Close[-window..-1], Volume[...], ...)."""

    X_train: np.ndarray  # (train, 3 * window) float64, in %
    y_train: np.ndarray  # (train,) float64, the next day's % change of Close
    X_test: np.ndarray  # (holdout, 3 * window)
    y_test: np.ndarray  # (holdout,)
    train_days: np.ndarray  # (train,) int64, the target day as days since 1970-01-01
    test_days: np.ndarray  # (holdout,) int64
    feature_names: tuple[str, ...]  # "Close[-7]" ... "Tweets[-1]"
    facts: dict[str, Any]  # rows, dropped (reason -> rows), split sizes and dates, ...


def read_table(content: bytes | None, name: str) -> pd.DataFrame:
    """A CSV file's bytes as a table of stripped strings (no cell is turned into NaN yet, so
    each missing value can be counted by what it was). UTF-8, else ISO-8859-1."""
    if content is None:
        raise DataError(f"`{name}`: no file content; give --data FILE.csv")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = content.decode("ISO-8859-1")  # every byte string decodes: rugged_data.csv's
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"`{name}` is not a readable CSV file: {str(e).strip()}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda column: column.str.strip())


def numeric_cells(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, list[str]]:
    """A column's numbers (NaN where there is none) and, per row, why not ("" if a number):
    `empty`, `null`, `dash` or `not a number`."""
    text = frame[column]
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    reasons = [
        "" if math.isfinite(v) else MISSING.get(t.lower(), "not a number")
        for v, t in zip(values, text, strict=True)
    ]
    return np.where(np.isfinite(values), values, np.nan), reasons


def parse_dates(frame: pd.DataFrame, column: str = "Date") -> pd.Series:
    """Dates as datetime64 (NaT where unreadable): the Ethereum file's "Jan 21 2018", else any
    format pandas reads cell by cell."""
    text = frame[column]
    dates = pd.to_datetime(text, format=DATE_FORMAT, errors="coerce")
    if dates.isna().any():
        other = pd.to_datetime(text[dates.isna()], format="mixed", errors="coerce")
        dates = dates.fillna(other)
    return dates.dt.normalize()


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    for column in columns:
        if column not in frame.columns:
            raise DataError(
                f"column `{column}` not in `{name}` (have: {', '.join(frame.columns)})",
                column=column,
            )


def usable_daily_rows(
    frame: pd.DataFrame, series: tuple[str, ...], name: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows with a readable Date and a number in each of `series`, sorted by date, one per day;
    and facts: rows, columns, dropped (each dropped row counted once, under its first reason),
    ignored (missing cells in columns not used)."""
    require_columns(frame, ("Date", *series), name)
    dates = parse_dates(frame)
    why = ["Date unreadable" if pd.isna(d) else "" for d in dates]
    values = {}
    for column in series:
        values[column], reasons = numeric_cells(frame, column)
        why = [w or (f"{column} {r}" if r else "") for w, r in zip(why, reasons, strict=True)]
    table = pd.DataFrame({"Date": dates, **values})
    table["why"] = why
    ok = table[table["why"] == ""].sort_values("Date", kind="stable")
    repeated = ok["Date"].duplicated(keep="first")
    table.loc[ok.index[repeated], "why"] = "Date repeated"
    ok = ok[~repeated].drop(columns="why").reset_index(drop=True)
    ignored: Counter[str] = Counter()
    for column in frame.columns:
        if column not in ("Date", *series):
            for text in frame[column]:
                if text.lower() in MISSING:
                    ignored[f"{column} {MISSING[text.lower()]}"] += 1
    dropped = Counter(w for w in table["why"] if w)
    facts = {
        "rows": int(len(frame)),
        "columns": [str(c) for c in frame.columns],
        "rows_used": int(len(ok)),
        "rows_dropped": int(sum(dropped.values())),
        "dropped": dict(sorted(dropped.items())),
        "ignored": dict(sorted(ignored.items())),  # cells of unused columns; no row dropped
    }
    if ok.empty:
        raise DataError(f"`{name}`: no usable rows ({_reasons(dropped)})")
    return ok, facts


def daily_changes(rows: pd.DataFrame, series: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """On the calendar from the first to the last day: days since 1970-01-01 (days,) and the %
    change from the day before (days, len(series)); NaN where either day is missing (dropped,
    or a gap) or the day before is 0."""
    start, end = rows["Date"].iloc[0], rows["Date"].iloc[-1]
    calendar = pd.date_range(start, end, freq="D")
    levels = rows.set_index("Date")[list(series)].reindex(calendar).to_numpy(dtype=float)
    changes = np.full_like(levels, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        changes[1:] = 100.0 * (levels[1:] / levels[:-1] - 1.0)
    changes[~np.isfinite(changes)] = np.nan
    days = (calendar.to_numpy().astype("datetime64[D]").astype(np.int64)).astype(np.int64)
    return days, changes


def read_forecast_data(
    content: bytes | None, *, window: int, holdout: int, name: str = "data"
) -> ForecastData:
    """The Ethereum-style daily CSV -> training and held-out (window, next day) examples.

    Rows without a date or a number in Close, Volume or Tweets are dropped and counted by
    reason; a % change needs the calendar day before, so the days after a dropped day (and the
    first `window` days of each unbroken run) cannot be targets: counted as `days_lost`.
    The last `holdout` examples are held out. Raises DataError (a column missing, nothing
    usable) or SpecError (window/holdout leave too few training days).
    """
    check_sizes(window, holdout)
    rows, facts = usable_daily_rows(read_table(content, name), SERIES, name)
    days, changes = daily_changes(rows, SERIES)
    if len(days) <= window:
        raise _too_few(window, holdout, 0, name)
    # Example for target day t: changes[t - window : t] of each series, then changes[t, Close].
    past = np.lib.stride_tricks.sliding_window_view(changes[:-1], window, axis=0)  # (n, 3, w)
    X = past.reshape(len(past), -1)
    y = changes[window:, SERIES.index(TARGET)]
    target_days = days[window:]
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
    X, y, target_days = X[ok], y[ok], target_days[ok]
    train = len(y) - holdout
    if train < min_train(window):
        raise _too_few(window, holdout, len(y), name)
    gaps = int(
        (np.diff(rows["Date"].to_numpy().astype("datetime64[D]").astype(np.int64)) > 1).sum()
    )
    facts.update(
        window=window,
        features=3 * window,
        series=list(SERIES),
        gaps=gaps,  # breaks in the calendar after the drops
        examples=int(len(y)),
        days_lost=int(facts["rows_used"] - len(y)),
        train=int(train),
        holdout=int(holdout),
        train_from=_iso(target_days[0]),
        train_to=_iso(target_days[train - 1]),
        holdout_from=_iso(target_days[train]),
        holdout_to=_iso(target_days[-1]),
        units="% change from the day before",
    )
    names = tuple(f"{s}[-{window - k}]" for s in SERIES for k in range(window))
    return ForecastData(
        X_train=X[:train], y_train=y[:train], X_test=X[train:], y_test=y[train:],
        train_days=target_days[:train], test_days=target_days[train:],
        feature_names=names, facts=facts,
    )  # fmt: skip


def min_train(window: int) -> int:
    return 3 * window + 1 + MIN_TRAIN


def check_sizes(window: int, holdout: int) -> None:
    for key, value in (("window", window), ("holdout", holdout)):
        if value < 1:
            raise SpecError(f"--set {key}={value}: must be at least 1", field="options")


def check_forecast(options: Mapping[str, Any], data: DataRef) -> dict[str, Any]:
    """Submit-time check of a forecast job: options in range, a CSV with Date, Close, Volume
    and Tweets, and enough days. Returns the data's facts plus `steps` (epochs x batches)."""
    if data.kind != "csv":
        raise SpecError(
            f"the forecast models take --data FILE.csv (got {data.kind} `{data.name}`)",
            field="data",
        )
    for key in ("epochs", "batch_size", "hidden"):
        if key in options and int(options[key]) < 1:
            raise SpecError(f"--set {key}={options[key]}: must be at least 1", field="options")
    if float(options["lr"]) <= 0:
        raise SpecError(f"--set lr={options['lr']}: must be > 0", field="options")
    found = read_forecast_data(
        data.content, window=int(options["window"]), holdout=int(options["holdout"]),
        name=data.name,
    )  # fmt: skip
    facts = dict(found.facts)
    facts["steps_per_epoch"] = steps_per_epoch(facts["train"], int(options["batch_size"]))
    facts["steps"] = facts["steps_per_epoch"] * int(options["epochs"])
    return facts


def steps_per_epoch(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


def _too_few(window: int, holdout: int, examples: int, name: str) -> SpecError:
    return SpecError(
        f"--set window={window} holdout={holdout}: `{name}` has {examples} usable days, which"
        f" leaves {max(examples - holdout, 0)} for training (need {min_train(window)});"
        " try a smaller window or holdout",
        field="options",
    )


def _reasons(dropped: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in dropped.items()) or "the file has no rows"


def _iso(day: np.integer | int) -> str:
    return str(np.datetime64(int(day), "D"))


_COMMON = {"window": 7, "holdout": 30, "epochs": 200, "batch_size": 64, "lr": 0.01}

FORECAST_LINREG = register(
    ModelCard(
        name="forecast-linreg",
        summary="Bayesian linear regression: next day's % change of ETH Close from the previous"
        " `window` days of % changes of Close, Volume and Tweets",
        defaults=dict(_COMMON),
        data=("csv",),
        check=check_forecast,
    )
)
FORECAST_BNN = register(
    ModelCard(
        name="forecast-bnn",
        summary="Bayesian neural network (Linear -> `hidden` units, linear activation -> Linear)"
        " for the next day's % change of ETH Close",
        defaults={**_COMMON, "hidden": 25},
        data=("csv",),
        check=check_forecast,
    )
)

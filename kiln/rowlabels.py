"""Label a job's data rows with a column of its data set (`jobs export --id-column isocode`):
the `row` coordinate of an export holds those values instead of the rows' positions.

The column must identify rows: present in the table the job read, one short printable string
or integer per row, no value twice among the rows the job used, nothing missing.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from kiln.errors import DataError
from kiln.specerrors import did_you_mean

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.orm import Session

    from kiln.export import JobResults

MAX_LABEL = 64  # characters in one label: a name or code, not a paragraph
MAX_COLUMN = 255  # characters in the name of the column asked for
MAX_ROWS = 10_000_000  # labels a results bundle may carry (a data set's rows, bounded)


def check_column(column: str) -> None:
    """Refuse a column name no table has (empty, or over MAX_COLUMN characters) before any
    data is read: directly and over the HTTP API alike."""
    if not 0 < len(column) <= MAX_COLUMN:
        raise DataError(f"--id-column: a column name has 1 to {MAX_COLUMN} characters (got"
                        f" {len(column)})", column[:MAX_COLUMN])  # fmt: skip


def checked_labels(labels: object) -> np.ndarray:
    """String row labels as a results bundle carries them (a JSON list), checked as row_labels
    made them: printable strings of 1 to MAX_LABEL characters, each once. Raises ValueError."""
    if not isinstance(labels, list) or not 0 < len(labels) <= MAX_ROWS:
        raise ValueError(f"row labels are not a list of 1 to {MAX_ROWS} strings")
    for v in labels:
        if not isinstance(v, str) or not 0 < len(v) <= MAX_LABEL or not v.isprintable():
            raise ValueError("a row label is not a printable string of 1 to"
                             f" {MAX_LABEL} characters")  # fmt: skip
    if len(set(labels)) < len(labels):
        raise ValueError("row labels name a row twice")
    return np.asarray(labels, dtype=str)


def row_labels(table: pd.DataFrame, column: str, positions: np.ndarray) -> np.ndarray:
    """The values of `column` at `positions` (the rows the job used): a str array, or an
    int64 array for an integer column. Raises DataError naming the column and what to try."""
    import pandas as pd

    check_column(column)
    columns = [str(c) for c in table.columns]
    if column not in columns:
        shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
        raise DataError(f"--id-column `{column[:100]}`: not a column of the job's data"
                        f"{did_you_mean(column, columns)} (have: {shown})", column)  # fmt: skip
    values = table[table.columns[columns.index(column)]].iloc[np.asarray(positions, dtype=np.int64)]
    if values.isna().any():
        raise DataError(f"--id-column `{column}`: {int(values.isna().sum())} row(s) have no"
                        " value; pick a column that names every row", column)  # fmt: skip
    if pd.api.types.is_integer_dtype(values.dtype):
        labels: np.ndarray = values.to_numpy(dtype=np.int64)
    elif pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype):
        texts = [v for v in values.tolist() if isinstance(v, str)]
        bad = next((v for v in texts if not v or len(v) > MAX_LABEL or not v.isprintable()), None)
        if len(texts) < len(values) or bad is not None:
            raise DataError(f"--id-column `{column}`: labels must be printable strings of 1 to"
                            f" {MAX_LABEL} characters or integers (got {str(bad)[:80]!r})",
                            column)  # fmt: skip
        labels = np.asarray(texts, dtype=str)
    else:
        raise DataError(f"--id-column `{column}`: a {values.dtype} column; labels must be short"
                        " strings or integers", column)  # fmt: skip
    unique, counts = np.unique(labels, return_counts=True)
    if len(unique) < len(labels):
        twice = unique[counts > 1][:3].tolist()
        raise DataError(f"--id-column `{column}`: {len(labels) - len(unique)} duplicate"
                        f" value(s) (e.g. {', '.join(map(str, twice))}); pick a column that"
                        " names each row once", column)  # fmt: skip
    return labels


def label_rows(session: Session, results: JobResults, column: str) -> JobResults:
    """`results` with its rows labelled by `column` of the data set the job read (a predict
    job's new data, else its fit's). Raises DataError for a job without data rows."""
    from db.datasets import load_dataset
    from db.jobs import get_job
    from kiln.tables import read_csv_bytes

    check_column(column)
    job, fit = get_job(session, results.job_id), get_job(session, results.fit_id)
    dataset_id = job.dataset_id or fit.dataset_id
    if results.rows is None or dataset_id is None:
        raise DataError(f"--id-column: job {job.id} has no data table rows to label (it is for"
                        " fits and predictions of table models, such as linreg)")  # fmt: skip
    dataset = load_dataset(session, dataset_id)
    table = read_csv_bytes(dataset.content, dataset.name or "data")
    return dataclasses.replace(results, rows=row_labels(table, column, results.rows))

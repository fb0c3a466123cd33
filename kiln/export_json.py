"""A job's stored results as one JSON document (`jobs export --format json`): its spec and
info, losses, every draw and the regression's data, NaN as null (moved out of kiln/export.py)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class JobResults(Protocol):
    """What this module reads of kiln.export.JobResults (which imports this module)."""

    job_id: str
    kind: str
    fit_id: str
    fit_spec: dict[str, Any]
    info: dict[str, Any]
    losses: list[tuple[int, float]]
    chains: int
    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    row_sites: dict[str, np.ndarray]
    terms: tuple[str, ...]
    response: str
    rows: np.ndarray | None
    X: np.ndarray | None
    y: np.ndarray | None
    new_data: bool


def as_json(r: JobResults) -> dict[str, Any]:
    """The document write_export writes for `--format json`."""

    def lists(values: np.ndarray | None) -> Any:
        """Nested lists, NaN as null (JSON has no NaN)."""
        if values is None:
            return None
        values = np.asarray(values)
        if values.dtype.kind == "f":
            cells = values.astype(object)
            cells[~np.isfinite(values)] = None
            return cells.tolist()
        return values.tolist()

    return {
        "job_id": r.job_id,
        "kind": r.kind,
        "fit_id": r.fit_id,
        "fit_spec": r.fit_spec,
        "info": r.info,
        "losses": [{"step": s, "loss": v} for s, v in r.losses],
        "chains": r.chains,
        "posterior": {s: lists(v) for s, v in r.posterior.items()},
        "sample_stats": {s: lists(v) for s, v in r.sample_stats.items()},
        "predictive": {s: lists(v) for s, v in r.row_sites.items()},
        "data": {
            "terms": list(r.terms),
            "response": r.response,
            "rows": lists(r.rows),
            "X": lists(r.X),
            "y": lists(r.y),
            "new_data": r.new_data,
        },
    }

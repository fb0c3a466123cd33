"""An MCMC job's chains gathered from its units' stored draws: one McmcFinished, chain-major
in unit order, and the log-likelihood rows with the draw positions made the job's."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from db.models import Job
from db.results import get_draws, get_sample_summaries
from inference.events import McmcFinished
from kiln.errors import ModelError
from kiln.jobinfo import McmcInfo
from kiln.specs import UserMcmcFitSpec
from worker.runners.loglik import DRAWS_SITE, LOGLIK_PREFIX, OBSERVED_PREFIX

Rows = dict[str, tuple[str, np.ndarray]]


def gather(
    session: Session, spec: UserMcmcFitSpec, units: list[tuple[str, int, int]],
    infos: list[McmcInfo],
) -> tuple[McmcFinished, Rows]:  # fmt: skip
    """The units' draws as the job's (chains, draws, *shape) arrays, and its loglik rows."""
    draws: dict[str, list[np.ndarray]] = {}
    stats: dict[str, list[np.ndarray]] = {}
    warmup: dict[str, list[np.ndarray]] = {}
    loglik: dict[str, list[np.ndarray]] = {}
    observed: dict[str, np.ndarray] = {}
    positions: list[np.ndarray] = []
    deterministic: set[str] = set()
    per_chain: int | None = None
    expected = [(first, count) for _, first, count in units]
    if expected != spec.units:
        raise ModelError(f"the job's units {expected} are not its chains {spec.units}")
    for unit_id, first, count in units:
        kinds = {s.site: s.kind for s in get_sample_summaries(session, unit_id)}
        values = get_draws(session, unit_id, kind=None)
        n = None
        for site, v in values.items():
            kind = kinds[site]
            if kind in ("posterior", "deterministic"):
                n = v.shape[0] // count
                draws.setdefault(site, []).append(v.reshape(count, n, *v.shape[1:]))
                if kind == "deterministic":
                    deterministic.add(site)
            elif kind == "sample_stats":
                stats.setdefault(site, []).append(v.reshape(count, -1))
            elif kind == "warmup":
                name = site.removeprefix("warmup:")
                warmup.setdefault(name, []).append(v.reshape(count, -1, *v.shape[1:]))
            elif site.startswith(LOGLIK_PREFIX):
                loglik.setdefault(site, []).append(v)
            elif site.startswith(OBSERVED_PREFIX):
                observed.setdefault(site, v)
        if n is None or (per_chain is not None and n != per_chain):
            raise ModelError(f"unit {unit_id} stored {n} draws per chain, not {per_chain}")
        per_chain = n
        if DRAWS_SITE in values:
            positions.append(values[DRAWS_SITE].reshape(-1) + first * n)
    finished = McmcFinished(
        draws={s: np.concatenate(v) for s, v in draws.items()},
        stats={s: np.concatenate(v) for s, v in stats.items()},
        chain_seconds=tuple(s for i in infos for s in i.chain_seconds),
        jit=all(bool(i.jit) for i in infos),
        note="; ".join(sorted({i.note for i in infos if i.note})),
        deterministic=tuple(s for s in draws if s in deterministic),
        warmup_draws={s: np.concatenate(v) for s, v in warmup.items()},
    )  # fmt: skip
    rows: Rows = {}
    if (
        loglik
        and len(positions) == len(units)
        and all(len(v) == len(units) for v in loglik.values())
    ):
        for site, parts in loglik.items():
            rows[site] = ("log_likelihood", np.concatenate(parts))
        rows.update({site: ("data", v) for site, v in observed.items()})
        rows[DRAWS_SITE] = ("data", np.concatenate(positions).astype(np.int64)[None, :])
    return finished, rows


def unit_record(unit: Job, info: McmcInfo) -> dict[str, Any]:
    """What the job's record keeps of one unit."""
    return {
        "id": unit.id, "first": int(unit.spec.get("first", 0)),
        "count": int(unit.spec.get("count", 1)), "status": unit.status, "worker": unit.worker,
        "attempts": unit.attempts, "resumed_at": list(info.resumed_at),
        "seconds": info.fit_seconds, "engine": info.engine, "step": info.step,
    }  # fmt: skip

"""run_batch(): fit a vectorised batch of sweep members as one Pyro program and store each
member's results as an ordinary fit's (losses, params, draws, guide params, fitted state)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from db.jobs import record_progress
from db.models import Dataset, JobStatus
from db.results import FitRecord, add_loss_rows, store_many_fit_results
from db.sweeps import MemberEnd, batch_progress, end_members, start_batch_members
from kiln.errors import Cancelled, UserError
from kiln.tables import bootstrap_counts, member_design, read_csv_bytes
from worker.runtime import Runtime

log = logging.getLogger(__name__)

ROW_KEYS = ("group_by", "group", "bootstrap", "bootstrap_seed")


Designs = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], list[dict[str, Any]]]


def _designs(frame: Any, specs: list[dict[str, Any]]) -> Designs:
    """X, y and row weights for every member: a shared design when no member picks a group
    (weights are bootstrap counts), else one design per member padded with rows of weight 0."""
    formula = specs[0]["formula"]
    if all(s.get("group_by") is None for s in specs):
        design, _ = member_design(frame, formula)  # one design; members differ in counts
        rows = design.rows_used
        counts = [
            bootstrap_counts(rows, s.get("bootstrap"), s.get("bootstrap_seed")) for s in specs
        ]
        facts = {"rows_used": design.rows_used, "rows_dropped": design.rows_dropped,
                 "response": design.response, "terms": list(design.terms)}  # fmt: skip
        return (
            design.X,
            design.y,
            np.stack(counts).astype(np.float64),
            design.terms,
            [facts] * len(specs),
        )
    built = [member_design(frame, formula, **{k: s.get(k) for k in ROW_KEYS}) for s in specs]
    terms = built[0][0].terms
    if any(d.terms != terms for d, _ in built):  # the submitter packs equal terms only
        raise UserError("members of one batch have different formula terms")
    rows = max(d.rows_used for d, _ in built)
    K = len(built)
    X = np.zeros((K, rows, len(terms)))
    y = np.zeros((K, rows))
    w = np.zeros((K, rows))
    facts = []
    for k, (d, c) in enumerate(built):
        X[k, : d.rows_used], y[k, : d.rows_used], w[k, : d.rows_used] = d.X, d.y, c
        facts.append({"rows_used": d.rows_used, "rows_dropped": d.rows_dropped,
                      "response": d.response, "terms": list(d.terms)})  # fmt: skip
    return X, y, w, terms, facts


def run_batch(
    rt: Runtime, batch_id: str, dataset: Dataset | None, info: dict[str, Any], started: float
) -> None:
    """Claimed batch `batch_id`: start its members, fit them together, store each one."""
    from inference.fit import resolve_device
    from inference.state import STATE_FORMAT
    from inference.vectorized import fit_many

    with rt.sessions() as session:
        members = start_batch_members(session, batch_id, rt.name)
        ids = [m.id for m in members]
        specs = [dict(m.spec) for m in members]
        infos = [dict(m.info or {}) for m in members]
    if not members:
        log.info("job %s: every member of this batch ended before it ran", batch_id)
        return
    if dataset is None:
        raise UserError(f"batch {batch_id} has no dataset")
    first = specs[0]
    device = resolve_device(first["device"])
    frame = read_csv_bytes(dataset.content, dataset.name)
    X, y, w, terms, facts = _designs(frame, specs)
    log.info("job %s: fitting %d members together on %s", batch_id, len(ids), device)
    last_flush = [time.monotonic()]

    def progress(step: int, losses: np.ndarray) -> None:
        if step < first["steps"] and time.monotonic() - last_flush[0] < rt.settings.flush_every_s:
            return
        last_flush[0] = time.monotonic()
        finite = losses[np.isfinite(losses)]
        info["alive"] = int(finite.size)
        with rt.sessions() as session:
            batch_progress(session, batch_id, step)
            cancel = record_progress(
                session, batch_id, worker=rt.name, losses=[], lease_s=rt.settings.lease_s,
                info=info, step=step,
            )  # fmt: skip
        if cancel:
            raise Cancelled()

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(rt.settings.batch_threads)
    try:
        result = fit_many(
            X, y, terms=terms, members=len(ids), weights=w, seeds=[s["seed"] for s in specs],
            steps=first["steps"], lr=[s["lr"] for s in specs], guide=first["guide"],
            priors=[s.get("priors") or None for s in specs], init=first.get("init", "auto"),
            num_samples=first["num_samples"], device=device, progress=progress,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    seconds = round(time.monotonic() - started, 3)
    fitted_at = time.monotonic()
    ok = len(result.ok)
    info.update(members=len(ids), succeeded=ok, failed=len(ids) - ok, fit_seconds=seconds,
                final_loss=None)  # fmt: skip
    records, ends, loss_rows = [], [], []
    for k, member in enumerate(result.members):
        curve = result.losses[:, k]
        steps_run = member.failed_step if member.failed_step is not None else len(curve)
        loss_rows += [(ids[k], i, float(v)) for i, v in enumerate(curve[:steps_run].tolist())]
        own = {**infos[k], "data": facts[k], "batch": batch_id, "vectorized": True,
               "fit_seconds": seconds}  # fmt: skip
        if member.status == "ok":
            own["final_loss"] = member.final_loss
            records.append(
                FitRecord(
                    ids[k],
                    sites=member.stats,
                    draws=member.draws,
                    guide_params=member.guide_params,
                    state=member.state or b"",
                    state_format=STATE_FORMAT,
                    guide=first["guide"],
                )  # fmt: skip
            )
            ends.append(MemberEnd(ids[k], JobStatus.SUCCEEDED.value, steps_run,
                                  float(curve[-1]), None, own))  # fmt: skip
        else:
            ends.append(MemberEnd(ids[k], JobStatus.FAILED.value, steps_run, None,
                                  member.reason, own))  # fmt: skip
    with rt.sessions() as session:
        add_loss_rows(session, loss_rows)
        store_many_fit_results(session, records)
        end_members(session, batch_id, ends)
        info["store_seconds"] = round(time.monotonic() - fitted_at, 3)
        record_progress(session, batch_id, worker=rt.name, losses=[], lease_s=rt.settings.lease_s,
                        info=info, step=first["steps"])  # fmt: skip
    log.info("job %s: %d of %d members succeeded; fit %.2f s, store %.2f s", batch_id, ok,
             len(ids), seconds, info["store_seconds"])  # fmt: skip

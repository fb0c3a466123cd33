"""A vectorised batch of sweep members: one Pyro program for all, each stored as its own fit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from db.claims import get_checkpoint
from db.results import FitRecord, add_loss_rows, store_many_fit_results
from db.sweeps import MemberEnd, batch_progress, end_members, start_batch_members
from inference.checkpoint import BATCH_CHECKPOINT_FORMAT, peek
from inference.events import BatchFinished, Event
from inference.fit import resolve_device
from inference.state import STATE_FORMAT
from inference.vectorized import ManyResult, run_many
from kiln.errors import UserError
from kiln.jobinfo import BatchInfo, SviInfo, info_for
from kiln.specs import BatchSpec, FitSpec, parse_job_spec
from kiln.tables import bootstrap_counts, member_design, read_csv_bytes
from worker.context import JobContext
from worker.runners.base import Runner
from worker.runners.svi import checkpoint_intervals

log = logging.getLogger(__name__)

Designs = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], list[dict[str, Any]]]


def member_designs(frame: Any, specs: list[FitSpec]) -> Designs:
    """X, y and row weights for every member: a shared design when no member picks a group
    (weights are bootstrap counts), else one design per member padded with rows of weight 0."""
    formula = specs[0].formula
    if all(s.group_by is None for s in specs):
        design, _ = member_design(frame, formula)  # one design; members differ in counts
        counts = [bootstrap_counts(design.rows_used, s.bootstrap, s.bootstrap_seed) for s in specs]
        weights = np.stack(counts).astype(np.float64)
        return design.X, design.y, weights, design.terms, [design.facts] * len(specs)
    built = [member_design(frame, formula, **(s.rows or {})) for s in specs]
    terms = built[0][0].terms
    if any(d.terms != terms for d, _ in built):  # the submitter packs equal terms only
        raise UserError("members of one batch have different formula terms")
    rows = max(d.rows_used for d, _ in built)
    K = len(built)
    X, y, w = np.zeros((K, rows, len(terms))), np.zeros((K, rows)), np.zeros((K, rows))
    for k, (d, c) in enumerate(built):
        X[k, : d.rows_used], y[k, : d.rows_used], w[k, : d.rows_used] = d.X, d.y, c
    return X, y, w, terms, [d.facts for d, _ in built]


@dataclass
class _Batch:
    ids: list[str]
    specs: list[FitSpec]
    infos: list[SviInfo]
    result: ManyResult | None = None
    facts: list[dict[str, Any]] = field(default_factory=list)
    fitted_at: float = 0.0


class BatchRunner(Runner[BatchSpec, _Batch]):
    """A batch is claimed, leased, reaped and retried like any job; its members follow it."""

    kind = "batch"

    def prepare(self, ctx: JobContext[BatchSpec]) -> _Batch:
        with ctx.sessions() as session:
            members = start_batch_members(session, ctx.job_id, ctx.worker)
            ids = [m.id for m in members]
            specs = [parse_job_spec(dict(m.spec)) for m in members]
            infos = [info_for(str(s.kind), m.info) for s, m in zip(specs, members, strict=True)]
        fits = [s for s in specs if isinstance(s, FitSpec)]
        own = [i for i in infos if isinstance(i, SviInfo)]
        if len(fits) != len(specs) or len(own) != len(infos):
            raise UserError(f"batch {ctx.job_id}: a member is not a linreg fit")
        return _Batch(ids, fits, own)

    def run(self, ctx: JobContext[BatchSpec], b: _Batch) -> Iterator[Event]:
        if not b.ids:
            log.info("job %s: every member of this batch ended before it ran", ctx.job_id)
            return
        if ctx.data is None:
            raise UserError(f"batch {ctx.job_id} has no dataset")
        first = b.specs[0]
        device = resolve_device(first.device)
        X, y, w, terms, b.facts = member_designs(
            read_csv_bytes(ctx.data.content, ctx.data.name), b.specs
        )
        log.info("job %s: fitting %d members together on %s", ctx.job_id, len(b.ids), device)
        resume = self._resume(ctx, len(b.ids), first.steps)
        every, every_s = checkpoint_intervals(ctx, first)
        threads = torch.get_num_threads()
        torch.set_num_threads(ctx.settings.batch_threads)
        try:
            for event in run_many(
                X, y, terms=terms, members=len(b.ids), weights=w,
                seeds=[int(s.seed or 0) for s in b.specs], steps=first.steps,
                lr=[s.lr for s in b.specs], guide=first.guide,
                priors=[{k: v.model_dump() for k, v in s.priors.items()} or None for s in b.specs],
                init=first.init, num_samples=first.num_samples, device=device,
                checkpoint_every=every, checkpoint_every_s=every_s, resume=resume,
            ):  # fmt: skip
                if isinstance(event, BatchFinished):
                    b.result = event.result
                yield event
        finally:
            torch.set_num_threads(threads)
        b.fitted_at = ctx.seconds()

    @staticmethod
    def _resume(ctx: JobContext[BatchSpec], members: int, steps: int) -> bytes | None:
        """The batch's checkpoint, if it has one that fits these members (a member cancelled
        while the batch was queued again leaves fewer: then the batch starts over)."""
        with ctx.sessions() as session:
            saved = get_checkpoint(session, ctx.job_id)
            if saved is None:
                return None
            content, fmt = bytes(saved.content), saved.format
        head = peek(content)
        step = head.get("step")
        if (
            fmt != BATCH_CHECKPOINT_FORMAT
            or head.get("members") != members
            or not (isinstance(step, int) and 0 < step < steps)
        ):
            log.warning("job %s: its checkpoint (%s, %s members, step %s) does not fit this "
                        "batch of %d members; starting over", ctx.job_id, fmt,
                        head.get("members"), step, members)  # fmt: skip
            return None
        log.info("job %s: resuming from its checkpoint at step %d", ctx.job_id, step)
        ctx.info.note = f"resumed from its checkpoint at step {step}"
        return content

    def on_flush(self, ctx: JobContext[BatchSpec], session: Session, step: int | None) -> None:
        if step is not None:
            batch_progress(session, ctx.job_id, step)  # its members move with it

    def store(self, ctx: JobContext[BatchSpec], b: _Batch, session: Session) -> None:
        info = ctx.info
        assert isinstance(info, BatchInfo)
        result = b.result
        if result is None:
            return
        records, ends, loss_rows = [], [], []
        for k, member in enumerate(result.members):
            curve = result.losses[:, k]
            steps_run = member.failed_step if member.failed_step is not None else len(curve)
            loss_rows += [(b.ids[k], i, float(v)) for i, v in enumerate(curve[:steps_run].tolist())]
            own = b.infos[k].model_copy(
                update={"data": b.facts[k], "batch": ctx.job_id, "vectorized": True,
                        "fit_seconds": b.fitted_at}
            )  # fmt: skip
            if member.status == "ok":
                own.final_loss = member.final_loss
                records.append(
                    FitRecord(
                        b.ids[k],
                        sites=member.stats,
                        draws=member.draws,
                        guide_params=member.guide_params,
                        state=member.state or b"",
                        state_format=STATE_FORMAT,
                        guide=b.specs[0].guide,
                    )  # fmt: skip
                )
                ends.append(MemberEnd(b.ids[k], "succeeded", steps_run, float(curve[-1]), None,
                                      own.dump()))  # fmt: skip
            else:
                ends.append(MemberEnd(b.ids[k], "failed", steps_run, None, member.reason,
                                      own.dump()))  # fmt: skip
        ok = len(result.ok)
        info.succeeded, info.failed = ok, len(b.ids) - ok
        info.fit_seconds = b.fitted_at
        add_loss_rows(session, loss_rows)
        store_many_fit_results(session, records)
        end_members(session, ctx.job_id, ends)
        info.store_seconds = round(ctx.seconds() - b.fitted_at, 3)
        log.info("job %s: %d of %d members succeeded; fit %.2f s, store %.2f s", ctx.job_id, ok,
                 len(b.ids), b.fitted_at, info.store_seconds)  # fmt: skip

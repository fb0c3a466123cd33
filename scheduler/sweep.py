"""submit_sweep(): expand a sweep into member fits, pack what can share a vectorised batch,
store sweep + batches + members in one transaction, then send."""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from db.datasets import store_dataset
from db.labels import commit_labelled, label_sweep
from db.models import Job, JobStatus, Sweep, utcnow
from kiln.errors import SpecError, UserError
from kiln.jobinfo import BatchInfo, SviInfo, SweepRef
from kiln.labels import Labels
from kiln.specs import (
    CONTROL,
    MAX_TEXT,
    BatchSpec,
    FitSpec,
    parse_prior_option,
    parse_spec,
    validate_spec,
)
from kiln.sweepspec import GRID_KEYS, PRIOR_KEY_PREFIX, GridValue, SweepSpec
from kiln.tables import group_values, member_design
from scheduler.kinds.linreg import check_linreg_data
from scheduler.limits import Limits, Owner
from scheduler.packing import Member, member_bytes, plan
from scheduler.routing import route
from scheduler.submit import Sender, gpu_free, new_job_id, send_or_forget

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Submitted:
    sweep_id: str
    members: list[str]  # member job ids, by member index
    batches: list[str]  # batch job ids
    queue: str
    packed: int  # members fitted in vectorised batches (the rest run as ordinary jobs)
    unpacked: dict[str, int] = field(default_factory=dict)  # why the rest: reason -> members


def expand(spec: SweepSpec, seed: int, groups: list[str] | None) -> list[Member]:
    """Every member: grid combinations x groups x bootstrap replicates x seeds, in that order.

    Member seeds are `seed`, `seed + 1`, ...; replicate b of every member is drawn from
    (seed, b), so the same replicate is shared by all grid points and seeds.
    """
    keys = list(spec.grid)
    base = spec.base.model_dump(mode="json")
    members: list[Member] = []
    checked: dict[tuple[str, ...], dict[str, Any]] = {}
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        typed = _typed(dict(zip(keys, combo, strict=True)))
        label = tuple(f"{k}={_show(v)}" for k, v in typed.items())
        if label not in checked:
            try:
                parse_spec(_with_grid(base, typed))
            except SpecError as e:
                raise SpecError(f"--grid {', '.join(label)}: {e}", "grid") from None
            checked[label] = typed
        for group in groups if groups is not None else [None]:
            for replicate in range(spec.bootstrap) if spec.bootstrap else [None]:
                for j in range(spec.seeds):
                    member_seed = (seed + j) % 2**32
                    rows: dict[str, Any] = {}
                    if group is not None:
                        rows.update(group_by=spec.group_by, group=group)
                    if replicate is not None:
                        rows.update(bootstrap=replicate, bootstrap_seed=seed)
                    fit = validate_spec(
                        FitSpec, {**_with_grid(base, typed), **rows, "seed": member_seed}
                    )
                    settings = {**{k: _show(v) for k, v in typed.items()}, "seed": member_seed}
                    if group is not None:
                        settings[spec.group_by or "group"] = group
                    if replicate is not None:
                        settings["bootstrap"] = replicate
                    members.append(Member(len(members), settings, fit))
    return members


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, GridValue] = {}  # a prior dict, or a value of the key's GRID_KEYS type
    for key, value in values.items():
        if key.startswith(PRIOR_KEY_PREFIX):
            out[key] = _prior(key, value)
        elif GRID_KEYS[key] is int:
            out[key] = _whole(key, value)
        else:
            try:
                out[key] = GRID_KEYS[key](value)
            except (TypeError, ValueError):
                kind = GRID_KEYS[key].__name__
                raise SpecError(f"--grid {key}={value}: not a {kind}", "grid") from None
    return out


def _whole(key: str, value: Any) -> int:
    """A grid value of a whole-number key (steps, num_samples): `1000` or `1e3`, never `10.5`,
    `nan` or `1e400`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not number.is_integer():
        raise SpecError(f"--grid {key}={text[:40]}: not a whole number", "grid")
    return int(number)


def grid_numbers(spec: SweepSpec, key: str) -> list[int]:
    """The values of a whole-number key over the base and the grid (steps, num_samples)."""
    base = int(getattr(spec.base, key))
    return [base, *(_whole(key, v) for v in spec.grid.get(key, []))]


def _prior(key: str, value: Any) -> dict[str, Any]:
    """`normal(0, 1)` (or a prior dict, from the JSON API) for grid key `prior.SITE`."""
    if isinstance(value, dict):
        return dict(value)
    site = key[len(PRIOR_KEY_PREFIX) :]
    try:
        return parse_prior_option(f"{site}={value}")[1]
    except SpecError:
        raise SpecError(
            f"--grid {key}={value}: write normal(LOC, SCALE), or uniform(LOW, HIGH) for sigma",
            "grid",
        ) from None


def _show(value: Any) -> Any:
    """A grid value as `jobs sweep show` prints it (priors as written on the command line)."""
    if isinstance(value, dict) and "dist" in value:
        a, b = ("loc", "scale") if value["dist"] == "normal" else ("low", "high")
        return f"{value['dist']}({value[a]:g}, {value[b]:g})"
    return value


def _with_grid(base: dict[str, Any], typed: dict[str, Any]) -> dict[str, Any]:
    """The base spec with one grid combination: plain keys replace, `prior.SITE` keys add to
    (or replace in) the base's priors."""
    plain = {k: v for k, v in typed.items() if not k.startswith(PRIOR_KEY_PREFIX)}
    priors = {k[len(PRIOR_KEY_PREFIX) :]: v for k, v in typed.items()
              if k.startswith(PRIOR_KEY_PREFIX)}  # fmt: skip
    out = {**base, **plain}
    if priors:
        out["priors"] = {**base.get("priors", {}), **priors}
    return out


def batch_size(spec: SweepSpec, rows: int, terms: int, limits: Limits) -> int:
    """`--batch-size`, or as many members as fit the memory budget (KILN_SWEEP_MEMORY_MB,
    capped at KILN_SWEEP_MAX_BATCH)."""
    if spec.batch_size is not None:
        return spec.batch_size
    # the most any member keeps: a grid may give some members more steps or draws than the base
    steps, draws = max(grid_numbers(spec, "steps")), max(grid_numbers(spec, "num_samples"))
    one = member_bytes(rows, terms, draws, steps)
    fits = math.floor(limits.sweep_memory_mb * 2**20 / one)
    return max(1, min(limits.sweep_max_batch, fits))


def submit_sweep(
    sessions: sessionmaker[Session],
    spec: SweepSpec,
    content: bytes,
    *,
    data_name: str,
    send: Sender,
    limits: Limits,
    owner: Owner | None = None,
    labels: Labels | None = None,
) -> Submitted:
    """Check the sweep (data, formula, grid, groups, size), store it, send its jobs.

    One transaction writes the dataset, the sweep, its batch jobs and its member jobs; then
    the batches and the unpacked members are sent. With `owner`, the sweep and its jobs record
    the user and their cap on unfinished jobs is checked. `labels`: the sweep's name and its
    tags, which every member carries too. Bad input raises a UserError with nothing
    written; if the broker refuses, everything is removed again (InfraError).
    """
    base = spec.base
    for steps in grid_numbers(spec, "steps"):  # every member's steps, before any data is read
        limits.check_steps(steps, "spec.steps" if steps == base.steps else "--grid steps")
    data = check_linreg_data(base, content, data_name)
    frame = data.frame  # parsed once, by the check
    groups = group_values(frame, spec.group_by) if spec.group_by else None
    terms: dict[str | None, tuple[str, ...]] = {None: data.design.terms}
    sites = (*terms[None], "sigma")
    for key in spec.grid:
        if key.startswith(PRIOR_KEY_PREFIX) and key[len(PRIOR_KEY_PREFIX) :] not in sites:
            raise SpecError(f"--grid {key}: no such site (sites: {', '.join(sites)})", field="grid")
    rows = data.design.rows_used
    if groups is not None:
        if not groups:
            raise UserError(f"--group-by {spec.group_by}: the column has no values")
        for group in groups:  # a group's value is stored with each of its members
            if len(group) > MAX_TEXT or CONTROL.search(group):
                raise UserError(
                    f"--group-by {spec.group_by}: the value `{group[:40]}...` is not a group"
                    f" name (at most {MAX_TEXT} characters, no control characters)"
                )
        for group in groups:
            design, _ = member_design(frame, base.formula, group_by=spec.group_by, group=group)
            if design.rows_used < 2:
                raise UserError(
                    f"--group-by {spec.group_by}: group {group} has {design.rows_used} usable"
                    " row(s); a fit needs at least 2"
                )
            terms[group] = design.terms
            rows = max(rows, design.rows_used)
    size = math.prod(len(v) for v in spec.grid.values()) * spec.seeds
    size *= (spec.bootstrap or 1) * (len(groups) if groups else 1)
    if size > limits.max_sweep_members:
        raise SpecError(
            f"the sweep has {size} members; at most {limits.max_sweep_members}"
            " (KILN_MAX_SWEEP_MEMBERS)",
            field="grid",
        )
    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    spec = spec.model_copy(update={"seed": seed})
    members = expand(spec, seed, groups)
    batch = batch_size(spec, rows, len(terms[None]) + 1, limits)
    packing = plan(spec, members, terms, batch)
    queue = route(base, lambda: gpu_free(sessions, limits))
    sweep_id = new_job_id()
    member_ids = [new_job_id() for _ in members]
    batch_ids = [new_job_id() for _ in packing.batches]
    in_batch = {i: batch_ids[b] for b, indices in enumerate(packing.batches) for i in indices}
    now = utcnow()
    common = dict(
        kind="fit", model=base.model, queue=queue, priority=base.priority, step=0, attempts=0,
        max_attempts=limits.max_attempts, status=JobStatus.QUEUED.value, queued_at=now,
        created_at=now, cancel_requested=False, sweep_id=sweep_id,
        owner=owner.user if owner is not None else None,
    )  # fmt: skip
    with sessions() as session:
        if owner is not None:
            owner.check(session, len(members))
        dataset_id = store_dataset(
            session, content, name=Path(data_name).name, format="csv",
            columns=data.columns, num_rows=len(data.frame),
        )  # fmt: skip
        session.add(
            Sweep(
                id=sweep_id,
                model=base.model,
                owner=common["owner"],
                spec=spec.model_dump(mode="json"),
                dataset_id=dataset_id,
                members=len(members),
                batches=len(batch_ids),
                info={
                    "data": data.design.facts,
                    "groups": groups,
                    "batch_size": batch,
                    "single": {str(i): packing.why_single[i] for i in packing.single},
                },
            )  # fmt: skip
        )
        session.flush()
        if batch_ids:
            session.execute(
                insert(Job),
                [
                    {**common, "id": batch_ids[b], "kind": "batch", "member": None,
                     "spec": BatchSpec(sweep=sweep_id, members=len(indices), steps=base.steps,
                                       seed=seed, device=base.device, queue=base.queue,
                                       priority=base.priority).model_dump(mode="json"),
                     "dataset_id": dataset_id, "total_steps": base.steps,
                     "info": BatchInfo(members=len(indices)).dump()}
                    for b, indices in enumerate(packing.batches)
                ],
            )  # fmt: skip
        session.execute(
            insert(Job),
            [
                {**common, "id": member_ids[m.index], "member": m.index,
                 "batch_id": in_batch.get(m.index), "spec": m.spec.model_dump(mode="json"),
                 "dataset_id": dataset_id, "total_steps": m.spec.steps,
                 "info": SviInfo(sweep=SweepRef(id=sweep_id, index=m.index,
                                                settings=m.settings)).dump()}
                for m in members
            ],
        )  # fmt: skip
        if labels is not None:
            label_sweep(session, session.get_one(Sweep, sweep_id), labels, member_ids)
        commit_labelled(session, labels.name if labels is not None else None)
    messages = [(b, queue, base.priority) for b in batch_ids]
    messages += [(member_ids[i], queue, base.priority) for i in packing.single]
    _send_or_forget_sweep(sessions, sweep_id, messages, send)
    log.info(
        "sweep %s: %d members, %d in %d vectorised batches, %d as ordinary jobs, on %s",
        sweep_id, len(members), len(in_batch), len(batch_ids), len(packing.single), queue,
    )  # fmt: skip
    reasons = Counter(packing.why_single[i] for i in packing.single)
    return Submitted(sweep_id, member_ids, batch_ids, queue, len(in_batch), dict(reasons))


def _send_or_forget_sweep(
    sessions: sessionmaker[Session], sweep_id: str, messages: list[tuple[str, str, int]],
    send: Sender,
) -> None:  # fmt: skip
    """Send every message; if the broker refuses one, remove the sweep and all its jobs."""
    from db.sweeps import delete_sweep

    try:
        send_or_forget(sessions, messages, [], send)
    except Exception:
        with sessions() as session:
            delete_sweep(session, sweep_id)
        raise

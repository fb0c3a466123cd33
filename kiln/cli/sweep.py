"""`jobs submit sweep` and `jobs sweep show|list|cancel`: many related fits as one sweep."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from kiln.catalog import ELBOS, GUIDES, MODELS, OPTIMS, QUEUES
from kiln.cli.app import JOB_FAILED, OK, UNAVAILABLE, App, jobs
from kiln.cli.choices import SuggestingChoice
from kiln.cli.complete import sweep_ids
from kiln.cli.submit import AS_JSON, NAME, TAGS, TIMEOUT, WAIT, submit
from kiln.errors import SpecError
from kiln.render import FORMAT, emit_rows

LINE_EVERY_S = 5.0


def parse_grid(items: tuple[str, ...]) -> dict[str, list[str]]:
    """`--grid lr=0.005,0.01 --grid guide=AutoNormal` -> {"lr": [...], "guide": [...]}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise SpecError(f"--grid {item!r}: write KEY=V1,V2,... (e.g. lr=0.005,0.01)", "grid")
        if key in grid:
            raise SpecError(f"--grid {key} given twice; list all its values in one --grid", "grid")
        grid[key] = [v.strip() for v in _split_top(values) if v.strip()]
    return grid


def _split_top(text: str) -> list[str]:
    """Split at the commas outside parentheses: `normal(0,1),normal(0,10)` is two values."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


@submit.command()
@click.option("--model", required=True, type=SuggestingChoice(MODELS), help="A built-in model.")
@click.option("--data", "data_path", required=True, help="CSV file.")
@click.option("--formula", required=True, help='e.g. "log(rgdppc_2000) ~ cont_africa * rugged".')
@click.option(
    "--grid", "grid", multiple=True, metavar="KEY=V1,V2,...",
    help="Values of one setting to sweep over (lr, guide, steps, init, elbo, optim,"
    " num_samples, or prior.SITE: 'prior.rugged=normal(0,1),normal(0,10)'); repeatable:"
    " every combination is a member.",
)  # fmt: skip
@click.option(
    "--seeds", type=int, default=1, show_default=True,
    help="Seeds per combination: SEED, SEED+1, ...",
)  # fmt: skip
@click.option(
    "--bootstrap", type=int, default=None, metavar="N",
    help="N bootstrap resamples of the rows per combination and seed.",
)  # fmt: skip
@click.option(
    "--group-by", default=None, metavar="COLUMN",
    help="One member per value of COLUMN, fitted on that group's rows.",
)  # fmt: skip
@click.option(
    "--vectorize", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
    help="auto: pack members that can share a vectorised batch, run the rest as ordinary jobs;"
    " on: refuse a sweep with a member that cannot be packed; off: every member its own job.",
)  # fmt: skip
@click.option(
    "--batch-size", type=int, default=None,
    help="Members per vectorised batch [default: by a memory model, KILN_SWEEP_MEMORY_MB].",
)  # fmt: skip
@click.option("--guide", type=SuggestingChoice(GUIDES), default="AutoNormal", show_default=True)
@click.option("--steps", type=int, default=1000, show_default=True)
@click.option("--lr", type=float, default=0.02, show_default=True)
@click.option("--elbo", type=SuggestingChoice(ELBOS), default="auto", show_default=True)
@click.option("--optim", type=SuggestingChoice(OPTIMS), default="Adam", show_default=True)
@click.option("--num-samples", type=int, default=1000, show_default=True,
              help="Posterior draws kept per member.")  # fmt: skip
@click.option("--prior", "priors", multiple=True, help="As for `submit fit`; every member.")
@click.option("--init", type=click.Choice(["auto", "median"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=None, help="The sweep's seed (default: random).")
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True
)
@click.option("--queue", type=click.Choice(QUEUES), default=None, help="Default: by device.")
@click.option("--priority", type=int, default=5, show_default=True, help="0-9, higher runs sooner.")
@NAME
@TAGS
@WAIT
@TIMEOUT
@AS_JSON
@click.pass_obj
def sweep(app: App, /, data_path: str, grid: tuple[str, ...], priors: tuple[str, ...],
          seeds: int, bootstrap: int | None, group_by: str | None, vectorize: str,
          batch_size: int | None, seed: int | None, wait: bool, timeout: float | None,
          as_json: bool, **options: Any) -> None:  # fmt: skip
    """Many fits of one model and data: a grid of settings x seeds x bootstrap resamples x
    groups. Each member is an ordinary job (its own losses, params, draws); members that
    differ only in seed, resample, group, lr or priors are fitted together in vectorised
    batches.

    \b
    jobs submit sweep --model linreg --data rugged_data.csv \\
        --formula "log(rgdppc_2000) ~ cont_africa * rugged" \\
        --grid lr=0.005,0.01,0.02 --grid guide=AutoNormal,AutoMultivariateNormal --seeds 8
    jobs submit sweep ... --bootstrap 256 --wait
    jobs submit sweep ... --grid "prior.rugged=normal(0,0.1),normal(0,1),normal(0,10)"
    """
    from kiln.specs import parse_prior_option

    sweep = {"seeds": seeds, "bootstrap": bootstrap, "group_by": group_by,
             "vectorize": vectorize, "batch_size": batch_size, "seed": seed}  # fmt: skip
    formula = options.pop("formula")
    done = app.client.submit_sweep(
        data_path, formula, grid=parse_grid(grid), sweep=sweep,
        priors=dict(parse_prior_option(p) for p in priors), **options,
    )  # fmt: skip
    line = (f"sweep {done.sweep_id}: {len(done.members)} members on `{done.queue}`,"
            f" {done.packed} in {len(done.batches)} vectorised batch(es)")  # fmt: skip
    if done.unpacked:  # said at submit: these run one after another, each its own fit
        why = "; ".join(f"{n} because {reason}" for reason, n in done.unpacked.items())
        line += f"; {sum(done.unpacked.values())} as ordinary jobs, one fit each ({why})"
    if not wait:
        if as_json:
            app.emit({"id": done.sweep_id, "members": done.members, "batches": done.batches,
                      "queue": done.queue, "unpacked": done.unpacked, "status": "queued"},
                     as_json=True)  # fmt: skip
            return
        app.emit(done.sweep_id)
        app.say(f"{line}; follow it with `jobs sweep show {done.sweep_id}`")
        return
    app.say(line)
    status = wait_for_sweep(app, done.sweep_id, timeout, quiet=as_json)
    _show(app, done.sweep_id, as_json, "table")
    sys.exit(OK if status == "succeeded" else JOB_FAILED)


def wait_for_sweep(app: App, sweep_id: str, timeout: float | None, quiet: bool = False) -> str:
    """Poll until every member has ended; returns the sweep's status."""
    started = time.monotonic()
    last_line = 0.0
    while True:
        view = app.client.sweep(sweep_id, members=False)
        status, counts = view.status, view.counts
        ended = status in ("succeeded", "failed", "cancelled")
        if not quiet and (ended or time.monotonic() - last_line >= LINE_EVERY_S):
            last_line = time.monotonic()
            shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            app.say(f"sweep {sweep_id}: {status} ({shown})")
        if ended:
            return status
        if timeout is not None and time.monotonic() - started > timeout:
            app.abort(f"gave up waiting after {timeout:g} s; sweep {sweep_id} is {status}",
                      UNAVAILABLE)  # fmt: skip
        time.sleep(app.settings.poll_interval_s)


@jobs.group("sweep")
def sweep_group() -> None:
    """Look at and stop sweeps (`jobs submit sweep` starts one)."""


def _show(app: App, sweep_id: str, as_json: bool, fmt: str, members: bool = True) -> None:
    from dataclasses import asdict

    view = app.client.sweep(sweep_id, members=members)
    if as_json:
        doc = asdict(view)
        doc["created_at"] = view.created_at.isoformat() if view.created_at else None
        app.emit(doc, as_json=True)
        return
    counts = ", ".join(f"{n} {s}" for s, n in sorted(view.counts.items()))
    spec = view.spec
    what = [f"{k}={','.join(map(str, v))}" for k, v in spec.get("grid", {}).items()]
    what.append(f"seeds={spec.get('seeds')}")
    if spec.get("bootstrap"):
        what.append(f"bootstrap={spec['bootstrap']}")
    if spec.get("group_by"):
        what.append(f"group_by={spec['group_by']}")
    click.echo(f"sweep {view.id}: {view.status} ({counts})", err=True)
    settings = f"vectorize {spec.get('vectorize')}, seed {spec.get('seed')}"
    click.echo(f"  {view.model} `{spec['base']['formula']}`; {' '.join(what)}; {settings}",
               err=True)  # fmt: skip
    busy = sum(b["status"] not in ("succeeded", "failed", "cancelled") for b in view.batches)
    if view.batches:
        seconds = [b["seconds"] for b in view.batches if b["seconds"] is not None]
        took = f", {sum(seconds):.1f} s fitting" if seconds else ""
        click.echo(f"  {len(view.batches)} vectorised batch(es) of up to"
                   f" {view.info.get('batch_size')}, {busy} not ended{took}", err=True)  # fmt: skip
    single = view.info.get("single") or {}
    if single:
        reasons = sorted(set(single.values()))
        click.echo(f"  {len(single)} member(s) as ordinary jobs: {'; '.join(reasons)}", err=True)
    if not members:
        return
    keys: list[str] = []
    sites: list[str] = []
    for m in view.members:
        keys += [k for k in m.settings if k not in keys]
        sites += [s for s in m.params if s not in sites]
    columns = ["member", "id", *keys, "status", "final_loss", *sites, "error"]

    def last_line(error: str | None) -> str | None:
        lines = (error or "").strip().splitlines()
        return lines[-1] if lines else None

    def short(value: float | None) -> float | None:
        return None if value is None else round(value, 4) + 0.0  # + 0.0: no "-0"

    rows = [
        [m.index, m.job_id, *(m.settings.get(k) for k in keys), m.status, short(m.final_loss),
         *(short(m.params.get(s)) for s in sites), last_line(m.error)]
        for m in view.members
    ]  # fmt: skip
    if fmt == "table" and not any(row[-1] for row in rows):
        columns, rows = columns[:-1], [row[:-1] for row in rows]
    emit_rows(columns, rows, fmt, title=f"sweep {view.id}")


@sweep_group.command("show")
@click.argument("sweep_id", shell_complete=sweep_ids)
@FORMAT
@click.option("--json", "as_json", is_flag=True, help="The sweep and its members as JSON.")
@click.option("--summary", is_flag=True, help="Only the sweep's status, no member table.")
@click.option(
    "--by", default=None, metavar="KEY,KEY,...",
    help="One row per group of members with the same values of these settings (e.g."
    " lr,guide): members, succeeded, and mean and sd across the succeeded members of the"
    " final loss and of each site's posterior mean.",
)  # fmt: skip
@click.pass_obj
def show(app: App, sweep_id: str, fmt: str, as_json: bool, summary: bool,
         by: str | None) -> None:  # fmt: skip
    """One row per member: its settings, status, final loss and posterior means (with --by,
    one row per group of members).

    \b
    jobs sweep show SWEEP_ID --by lr,guide      # mean and sd across seeds per grid point
    """
    if by is None:
        _show(app, sweep_id, as_json, fmt, members=not summary)
        return
    from kiln.sweepsummary import parse_by

    groups = app.client.sweep_groups(sweep_id, parse_by(by))
    if as_json:
        app.emit(groups.to_dict(), as_json=True)
        return
    rows = groups.rows
    if fmt == "table":  # people read 4 decimals; csv and json keep every digit
        rows = [[round(v, 4) + 0.0 if isinstance(v, float) else v for v in row] for row in rows]
    emit_rows(groups.columns, rows, fmt,
              title=f"sweep {groups.sweep_id} by {', '.join(groups.by)}")  # fmt: skip


@sweep_group.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@AS_JSON
@click.pass_obj
def list_(app: App, limit: int, as_json: bool) -> None:
    """Recent sweeps and their status."""
    rows = [
        [s.id, s.status, s.model, s.members, s.batches,
         ", ".join(f"{n} {k}" for k, n in sorted(s.counts.items())),
         s.created_at.isoformat(timespec="seconds") if s.created_at else None]
        for s in app.client.sweeps(limit)
    ]  # fmt: skip
    emit_rows(["id", "status", "model", "members", "batches", "counts", "created_at"], rows,
              "json" if as_json else "table")  # fmt: skip


@sweep_group.command("cancel")
@click.argument("sweep_id", shell_complete=sweep_ids)
@click.pass_obj
def cancel(app: App, sweep_id: str) -> None:
    """Cancel every member not yet ended (queued ones at once, running ones at a step)."""
    n = app.client.cancel_sweep(sweep_id)
    app.say(f"sweep {sweep_id}: cancel requested for {n} running job(s); queued ones cancelled")

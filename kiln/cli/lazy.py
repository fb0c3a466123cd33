# ruff: noqa: E501  (COMMANDS keeps one command per line, its short help whole)
"""LazyGroup: a click group that imports a command's module only when that command runs.

`jobs --help` lists every command from COMMANDS (name -> modules, short help) without
importing any command module, so it starts in about the time of `import click`; `jobs list`
imports kiln.cli.results and what it needs, and nothing that `jobs submit` or `jobs worker`
would (torch, pandas, formulaic, Alembic, Celery: tests/test_startup.py checks it).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import NamedTuple

import click


class Lazy(NamedTuple):
    """Where a top-level command is registered, and its short help for `jobs --help`."""

    modules: tuple[str, ...]  # imported in order; together they register the whole command
    short_help: str  # the command's first docstring sentence (a test checks they agree)


# ADDING A COMMAND is one line here: its name, the module(s) that register it on `jobs`
# (with `@jobs.command()` or `@jobs.group()`), and its first docstring sentence.
# tests/test_startup.py fails when a command is registered but missing here, or when the
# short help here differs from the command's own.
COMMANDS: dict[str, Lazy] = {
    "broker": Lazy(("kiln.cli.control",), "The embedded broker: a redis-server in KILN_HOME that the first command needing it starts and leaves running (queued messages are kept on disk)."),
    "cancel": Lazy(("kiln.cli.control",), "Cancel a job: a queued one never starts; a running one stops at its next step batch."),
    "compare": Lazy(("kiln.cli.compare",), "Rank fits by expected log predictive density (PSIS-LOO or WAIC), as arviz.compare does."),
    "db": Lazy(("kiln.cli.control",), "Database schema."),
    "demo": Lazy(("kiln.cli.demo",), "Fit the Pyro tutorial's rugged regression through a real worker, predict 800 draws, and show the result: a table of the posterior and the tutorial's figure (PNG)."),
    "diagnostics": Lazy(("kiln.cli.results",), "MCMC diagnostics: per site mean, sd, quantiles, r_hat, ess_bulk, ess_tail; per chain divergences, step size, tree depth, acceptance and time."),
    "export": Lazy(("kiln.cli.outputs",), "Write a job's results to a file: posterior, predictive draws, observed data, losses."),
    "list": Lazy(("kiln.cli.results",), "List recent jobs, newest first (or found by --where, sorted by --order-by)."),
    "logs": Lazy(("kiln.cli.logs",), "A job's own log: what its model printed, the warnings raised while it ran, and Kiln's lines about it (claimed, checkpoints, how it ended); how each attempt ended goes to stderr."),
    "losses": Lazy(("kiln.cli.results",), "The loss of every step: one row per step (or every K-th, or the last N)."),
    "metrics": Lazy(("kiln.cli.library",), "A job's metrics by step and epoch: train_elbo, test_elbo, test_accuracy, mse, mae..."),
    "models": Lazy(("kiln.cli.library",), "The built-in models: what data each takes and the options `--set` may change."),
    "params": Lazy(("kiln.cli.results",), "Posterior of each latent site (constrained): mean, sd, q05, q50, q95, shape."),
    "plot": Lazy(("kiln.cli.outputs",), "Draw a figure of a job's stored results (PNG)."),
    "samples": Lazy(("kiln.cli.outputs",), "Stored draws of a fit or predict job: per site (and element) mean, sd, q05, q50, q95."),
    "scheduler": Lazy(("kiln.cli.fleet",), "Run the reaper and the Prometheus metrics endpoint [env: KILN_DATABASE_URL, KILN_BROKER_URL]."),
    "server": Lazy(("kiln.cli.server",), "Serve the HTTP API: users submit and read jobs with a token, holding no database or broker credentials [env: KILN_DATABASE_URL, KILN_BROKER_URL]."),
    "show": Lazy(("kiln.cli.results",), "Show one job: spec, status, progress, attempts, timings, final loss, error."),
    "stats": Lazy(("kiln.cli.fleet",), "Jobs by queue and status, live workers per queue, and the oldest queued job's age."),
    "submit": Lazy(("kiln.cli.submit", "kiln.cli.sweep"), "Submit a job."),
    "sweep": Lazy(("kiln.cli.sweep",), "Look at and stop sweeps (`jobs submit sweep` starts one)."),
    "tag": Lazy(("kiln.cli.labels",), "Set or remove tags of a job, or of a sweep and all its members (by id or name)."),
    "token": Lazy(("kiln.cli.server",), "API tokens for `jobs server` [env: KILN_DATABASE_URL]."),
    "watch": Lazy(("kiln.cli.watch",), "Follow a job until it ends: progress (step/total, steps/s, latest loss and metrics)."),
    "worker": Lazy(("kiln.cli.control",), "Run a worker that takes jobs from the queues [env: KILN_BROKER_URL, KILN_DATABASE_URL]."),
    "workers": Lazy(("kiln.cli.fleet",), "Workers: alive or not, queues, device, last heartbeat, and the job each runs."),
}  # fmt: skip


def all_modules() -> list[str]:
    """Every command module, once each, in COMMANDS order."""
    return list(dict.fromkeys(m for lazy in COMMANDS.values() for m in lazy.modules))


def load_modules(modules: Sequence[str]) -> None:
    """Import command modules (each registers its commands on `jobs` as it is imported)."""
    for module in modules:
        importlib.import_module(module)


class LazyGroup(click.Group):
    """A group whose commands in COMMANDS are imported on first use; `--help` imports none."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            load_modules(COMMANDS[cmd_name].modules)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with the short help of commands not yet imported from COMMANDS."""
        names = [n for n in self.list_commands(ctx) if n in self.commands or n in COMMANDS]
        names = [n for n in names if not (n in self.commands and self.commands[n].hidden)]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is not None:
                rows.append((name, loaded.get_short_help_str(limit)))
            else:
                # A stand-in with the same text shortens it as click shortens the real one.
                stand_in = click.Command(name, help=COMMANDS[name].short_help)
                rows.append((name, stand_in.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

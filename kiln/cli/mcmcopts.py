"""`submit fit`'s MCMC options for units of work and stopping on convergence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

OPTIONS = ("chains_per_unit", "until", "max_samples", "check_every")


def mcmc_unit_options(f: F) -> F:
    """--chains-per-unit, --until, --max-samples, --check-every."""
    for option in reversed((
        click.option(
            "--chains-per-unit", type=int, default=None, metavar="K",
            help="MCMC: chains per unit of work; any worker claims a unit, a unit's chains run"
            " vectorised in one process [default: 1].",
        ),
        click.option(
            "--until", default=None, metavar="TARGETS",
            help='MCMC: sample until every site meets TARGETS, e.g. "r_hat<1.01,ess_bulk>400"'
            " (checked every --check-every draws; all chains in one unit).",
        ),
        click.option("--max-samples", type=int, default=None, metavar="N",
                     help="With --until: the most draws per chain [default: --samples]."),
        click.option("--check-every", type=int, default=None, metavar="N",
                     help="With --until: draws between checks [default: 250]."),
    )):  # fmt: skip
        f = option(f)
    return f

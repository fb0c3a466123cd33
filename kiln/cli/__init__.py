"""The `jobs` command: get_cli() builds the group with every command registered; main() runs it.

The group, App and the named exit codes are in kiln.cli.app (the command modules import them
from there) and re-exported here.
"""

from __future__ import annotations

import click

from kiln.cli.app import (
    BAD_INPUT,
    INTERRUPTED,
    JOB_FAILED,
    NOT_ALLOWED,
    NOT_FOUND,
    OK,
    UNAVAILABLE,
    App,
    JobsGroup,
    jobs,
)

__all__ = [
    "BAD_INPUT",
    "INTERRUPTED",
    "JOB_FAILED",
    "NOT_ALLOWED",
    "NOT_FOUND",
    "OK",
    "UNAVAILABLE",
    "App",
    "JobsGroup",
    "get_cli",
    "jobs",
    "main",
]


def get_cli() -> click.Group:
    """The `jobs` group with every command registered."""
    from kiln.cli import (  # noqa: F401  (registers the commands)
        control,
        demo,
        fleet,
        library,
        outputs,
        results,
        server,
        submit,
        sweep,
        watch,
    )  # fmt: skip

    return jobs


def main() -> None:
    get_cli()(prog_name="jobs")

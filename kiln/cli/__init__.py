"""The `jobs` command: main() runs it, importing only the command it runs (kiln.cli.lazy);
get_cli() builds the group with every command registered.

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
from kiln.cli.lazy import all_modules, load_modules

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
    """The `jobs` group with every command registered (tests, docs). A new command is one
    line in kiln.cli.lazy.COMMANDS; main() imports its module only when it runs."""
    load_modules(all_modules())
    return jobs


def main() -> None:
    # Not get_cli(): `jobs list` imports kiln.cli.results alone (kiln.cli.lazy).
    # The name it was called by (`kiln` or `jobs`): shell completion reads _KILN_COMPLETE
    # for `kiln` and _JOBS_COMPLETE for `jobs`, and its script hooks that name.
    import os
    import sys

    called = os.path.basename(sys.argv[0]) if sys.argv else ""
    jobs(prog_name=called if called in ("kiln", "jobs") else "jobs")

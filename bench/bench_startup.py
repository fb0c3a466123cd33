"""Start-up of a direct `jobs list` (SQLite in a fresh KILN_HOME), as committed against the
same command with the Alembic imports that the schema check used to make (db/migrate.py reads
the revisions without Alembic now). Interleaved runs; medians and their ratio.

    .venv/bin/python bench/bench_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

WITH_ALEMBIC = (
    "import alembic.command, alembic.config, alembic.script, alembic.runtime.migration\n"
    "import sys; from kiln.cli import main; sys.argv = ['jobs', 'list']; main()"
)


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        env["KILN_HOME"] = home
        now = [sys.executable, "-m", "kiln.cli", "list"]
        before = [sys.executable, "-c", WITH_ALEMBIC]
        timed(now, env)  # the first run creates and migrates the database
        pairs = [(timed(now, env), timed(before, env)) for _ in range(runs)]
    a = statistics.median(p[0] for p in pairs)
    b = statistics.median(p[1] for p in pairs)
    print(f"`jobs list`, {runs} runs each, interleaved (medians):")
    print(f"  as committed (no Alembic import)   {a * 1000:7.1f} ms")
    print(f"  with the Alembic imports           {b * 1000:7.1f} ms")
    print(f"  ratio {a / b:.3f}  ({(b - a) * 1000:.1f} ms saved)")


if __name__ == "__main__":
    main()

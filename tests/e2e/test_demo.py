"""`jobs demo` on the embedded defaults, as a new user runs it: the fit, the prediction, the
figure, and how to open the dashboard on them with a token it made."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_the_demo_ends_with_the_dashboard_its_url_and_a_working_token(tmp_path: Path) -> None:
    from db.session import make_engine, make_sessionmaker
    from db.tokens import find_token, hash_matches

    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(tmp_path / "home")
    from worker.embedded import stop_embedded_broker

    try:
        done = run_cli("demo", "--steps", "200", "-o", str(tmp_path / "demo.png"), env=env,
                       timeout=900)  # fmt: skip
    finally:
        stop_embedded_broker(tmp_path / "home")  # the demo leaves it running, as for a user
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    fit = re.search(r"^fit (\w+): 200 steps", done.stdout, re.M)
    assert fit is not None, done.stdout
    hint = re.search(
        r"dashboard: run `KILN_HOME=(\S+) (?:kiln|jobs) server` \(in another terminal\), open"
        r" http://127\.0\.0\.1:8321/ui/jobs/(\w+) and log in with this token .*\n  (kiln_\S+)$",
        done.stdout, re.M,
    )  # fmt: skip
    assert hint is not None, done.stdout[-1500:]
    assert hint.group(1) == env["KILN_HOME"] and hint.group(2) == fit.group(1)
    engine = make_engine(f"sqlite:///{tmp_path / 'home' / 'kiln.db'}")
    with make_sessionmaker(engine)() as session:
        row = find_token(session, hint.group(3))
        assert row is not None and (row.user, row.role) == ("demo", "read")
        assert hash_matches(hint.group(3), row.hash)
    engine.dispose()

"""The import rules of docs/architecture.md, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

import pytest

RULES = [
    ("inference.fit", ["celery", "sqlalchemy", "redis", "db", "worker", "scheduler"]),
    ("db.jobs", ["torch", "pyro", "celery", "inference", "worker"]),
    ("db.results", ["torch", "pyro", "celery"]),
    ("scheduler.enqueue", ["torch", "pyro", "inference", "worker", "celery"]),
    ("kiln.cli", ["torch", "pyro", "celery", "sqlalchemy"]),
    ("kiln.tables", ["torch", "pyro", "celery", "sqlalchemy", "db"]),
]


@pytest.mark.parametrize(("module", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_module_does_not_import_what_its_layer_forbids(module: str, forbidden: list[str]) -> None:
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in {forbidden!r} if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"


def test_catalog_guides_match_inference() -> None:
    from inference.guides import _FACTORIES
    from inference.models import MODELS
    from kiln.catalog import GUIDES
    from kiln.catalog import MODELS as CATALOG_MODELS

    assert set(_FACTORIES) == set(GUIDES)
    assert set(MODELS) == set(CATALOG_MODELS)

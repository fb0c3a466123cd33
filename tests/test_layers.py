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
    ("inference.predict", ["celery", "sqlalchemy", "redis", "db", "worker", "scheduler"]),
    ("kiln.export", ["torch", "celery", "sqlalchemy", "inference", "worker"]),
    ("kiln.plots", ["torch", "pyro", "celery", "sqlalchemy", "inference"]),
    ("kiln", ["torch", "pyro", "celery", "sqlalchemy", "pandas"]),
    ("inference.mcmc", ["celery", "sqlalchemy", "redis", "db", "worker", "scheduler"]),
    ("inference.userfit", ["celery", "sqlalchemy", "redis", "db", "worker", "scheduler"]),
    ("inference.vectorized", ["celery", "sqlalchemy", "redis", "db", "worker", "scheduler"]),
    ("scheduler.usermodel", ["torch", "pyro", "inference", "worker", "celery"]),
    ("kiln.userdata", ["torch", "pyro", "celery", "sqlalchemy", "db"]),
    ("kiln.diagnostics", ["torch", "pyro", "celery", "sqlalchemy", "inference"]),
    ("db.sources", ["torch", "pyro", "celery", "inference", "worker"]),
    ("kiln.library.forecast", ["torch", "pyro", "celery", "sqlalchemy", "inference"]),
    ("kiln.library.hmm", ["torch", "pyro", "celery", "sqlalchemy", "inference"]),
    ("kiln.library.digits", ["torch", "pyro", "celery", "sqlalchemy", "inference"]),
    ("kiln.library.plots", ["torch", "pyro", "celery", "sqlalchemy", "inference"]),
    ("inference.models.forecast", ["celery", "sqlalchemy", "redis", "db", "worker"]),
    ("worker.library", ["celery"]),
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


def test_library_cards_and_models_match_the_catalog() -> None:
    from inference.models import LIBRARY
    from kiln.catalog import LIBRARY_MODELS
    from kiln.library import CARDS, get_card

    for name in LIBRARY_MODELS:
        assert get_card(name).name == name
    assert set(CARDS) == set(LIBRARY_MODELS) == set(LIBRARY)


def test_models_match_the_migrations(tmp_path) -> None:
    """The tables Alembic builds are the tables db/models.py declares (nothing to autogenerate)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.migrate import upgrade_to_head
    from db.models import Base
    from db.session import make_engine

    url = f"sqlite:///{tmp_path / 'schema.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []

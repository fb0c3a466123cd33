"""The import rules of docs/architecture.md, read from the source, plus what must match across
layers (catalog, library cards, models and migrations).

tests/layers_check.py builds the import graph (every import, at any depth) and says which layer
each module is in and what it may import; its docstring lists the kiln base modules.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.layers_check import KILN_BASE, collect, import_cycles, layer_of, layer_violations

ROOT = Path(__file__).resolve().parent.parent


def test_no_module_imports_what_its_layer_forbids() -> None:
    violations = layer_violations(collect(ROOT))
    if violations:
        pytest.fail("\n".join(violations), pytrace=False)


def test_no_files_import_each_other_in_a_circle() -> None:
    cycles = import_cycles(collect(ROOT))
    if cycles:
        pytest.fail("\n".join(cycles), pytrace=False)


def test_every_kiln_base_module_exists() -> None:
    """A base module that was renamed or removed must leave the list, not linger in it."""
    modules = collect(ROOT, packages=["kiln"])
    assert sorted(KILN_BASE - set(modules)) == []
    assert layer_of("kiln.client") == "kiln top"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_sees_lazy_imports_type_checking_blocks_and_circles(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "db/__init__.py": "",
            "db/a.py": "def f():\n    import torch\n",
            "db/b.py": "from kiln.errors import KilnError\n",  # base: allowed
            "db/c.py": "def f():\n    from kiln import Client\n",  # a lazy re-export of top
            "inference/__init__.py": "",
            "inference/m.py": "class C:\n    def g(self):\n        from db import a\n",
            "scheduler/__init__.py": "",
            "scheduler/s.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from ..inference import m\n"
            ),
            "worker/__init__.py": "",
            "worker/x.py": "def f():\n    from worker import y\n",
            "worker/y.py": "def g():\n    from . import x\n",
            "kiln/__init__.py": (
                "def __getattr__(name):\n"
                "    if name == 'Client':\n"
                "        from kiln.client import Client\n"
                "        return Client\n"
                "    raise AttributeError(name)\n"
            ),
            "kiln/errors.py": "class KilnError(Exception): ...\n",
            "kiln/client.py": "from kiln.errors import KilnError\nimport worker.x\n",
        },
    )
    files = collect(tmp_path)

    assert layer_violations(files) == [
        "db/a.py:2 imports torch (layer db may not import torch)",
        "db/c.py:2 imports kiln.client (layer db may not import layer kiln top)",
        "inference/m.py:3 imports db.a (layer inference may not import layer db)",
        "scheduler/s.py:3 imports inference.m (layer scheduler may not import layer inference)",
    ]
    assert import_cycles(files) == [
        "cycle: worker/x.py, worker/y.py\n"
        "  worker/x.py:2 imports worker.y\n"
        "  worker/y.py:2 imports worker.x"
    ]


def test_the_checker_finds_a_circle_through_a_package_init(tmp_path: Path) -> None:
    """A submodule that reads its package's namespace, which imports it back, is a circle."""
    _write(
        tmp_path,
        {
            "kiln/__init__.py": "",
            "kiln/library/__init__.py": "def get():\n    from kiln.library import digits\n",
            "kiln/library/digits.py": "from kiln.library import register\n",
            "kiln/library/cards.py": "",
            "kiln/library/forecast.py": "from kiln.library.cards import DataRef\n",
        },
    )
    assert import_cycles(collect(tmp_path)) == [
        "cycle: kiln/library/__init__.py, kiln/library/digits.py\n"
        "  kiln/library/__init__.py:2 imports kiln.library.digits\n"
        "  kiln/library/digits.py:1 imports kiln.library"
    ]


# Start-up cost, measured in a fresh interpreter: `jobs --help` and `import kiln` stay light.
LIGHT_IMPORTS = [
    ("kiln.cli", ["torch", "pyro", "celery", "sqlalchemy", "fastapi", "uvicorn", "httpx"]),
    ("kiln", ["torch", "pyro", "celery", "sqlalchemy", "pandas"]),
]


@pytest.mark.parametrize(("module", "heavy"), LIGHT_IMPORTS, ids=[m for m, _ in LIGHT_IMPORTS])
def test_importing_stays_light(module: str, heavy: list[str]) -> None:
    code = f"import sys, {module}\nprint(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import {module} pulls in {out.stdout.strip()}"


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


def test_models_match_the_migrations(tmp_path: Path) -> None:
    """The tables Alembic builds are the tables db/models.py declares (nothing to autogenerate)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.migrate import upgrade_to_head
    from db.models import Base
    from db.session import make_engine

    url = f"sqlite:///{tmp_path / 'schema.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    # Alembic cannot reflect an expression index (the per-owner unique names): compare the rest,
    # and check those by name and by their SQL.
    expression_indexes = {"uq_jobs_owner_name", "uq_sweeps_owner_name"}

    def compared(obj: object, name: str | None, type_: str, reflected: bool, _: object) -> bool:
        return not (type_ == "index" and name in expression_indexes)

    with engine.connect() as connection, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
        context = MigrationContext.configure(connection, opts={"include_object": compared})
        diff = compare_metadata(context, Base.metadata)
        indexes: dict[str, str] = dict(connection.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index'").all())  # fmt: skip
    engine.dispose()
    assert diff == []
    for name in expression_indexes:
        assert "UNIQUE" in indexes[name] and "coalesce(owner, '')" in indexes[name], indexes[name]

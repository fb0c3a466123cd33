"""The job query language's syntax tree (kiln.query parses text into it; db/search.py compiles
it to SQL): fields, comparisons, boolean nodes, sort keys and the tokens they are read from.
Base layer: imports nothing of ours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FieldType = Literal["text", "number", "time", "json"]
# Plain fields: their value type. Prefixed ones: tag.KEY (text), spec.PATH (json),
# params.SITE.STAT and metrics.NAME (number).
PLAIN: dict[str, FieldType] = {
    "id": "text", "status": "text", "kind": "text", "model": "text", "method": "text",
    "guide": "text", "name": "text", "owner": "text", "sweep": "text",
    "created": "time", "finished": "time",
    "final_loss": "number", "last_loss": "number", "step": "number",
}  # fmt: skip
PREFIXED: dict[str, FieldType] = {
    "tag": "text",
    "spec": "json",
    "params": "number",
    "metrics": "number",
}
Op = Literal["=", "!=", "<", "<=", ">", ">="]
Value = str | int | float


@dataclass(frozen=True, slots=True)
class Field:
    """A field as written (`params.rugged.mean`): its root (`params`) and the parts after it."""

    text: str
    root: str
    parts: tuple[str, ...] = ()

    @property
    def type(self) -> FieldType:
        return PLAIN.get(self.root) or PREFIXED[self.root]


@dataclass(frozen=True, slots=True)
class Compare:
    field: Field
    op: Op
    value: Value


@dataclass(frozen=True, slots=True)
class InList:
    field: Field
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Like:
    """A case-insensitive pattern: `%` any run of characters, `_` any one character."""

    field: Field
    pattern: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class IsNull:
    field: Field
    negated: bool = False


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr


Expr = Compare | InList | Like | IsNull | And | Or | Not


@dataclass(frozen=True, slots=True)
class OrderKey:
    field: Field
    descending: bool


@dataclass(frozen=True, slots=True)
class Token:
    kind: Literal["ident", "keyword", "string", "number", "op", "(", ")", ",", "end"]
    text: str  # as written (a keyword lowercased; a string unquoted)
    pos: int  # 0-based character offset
    value: Value | None = None

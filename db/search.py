"""Job search: a kiln.query AST compiled to one SELECT over jobs, with bound parameters only.

Every comparison is true or false, never unknown: one on a value a job does not have (no such
tag, site, metric or spec key; a NULL column; a spec value of the other type) is false, and
NOT flips it (so `NOT tag.study = 'a'` finds the untagged jobs too). Tags, posterior
summaries and metrics are `jobs.id IN (SELECT job_id ...)`, which PostgreSQL hashes once and
SQLite builds a temporary index for, rather than a lookup per job. method, guide and
final_loss are columns (migration 0013), written where the job is (searchable_columns).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    SQLColumnExpression,
    and_,
    case,
    cast,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.orm import Session

from db.models import Job, JobTag, Metric, Param, as_utc
from kiln.query import parse_moment
from kiln.querytree import (
    And,
    Compare,
    Expr,
    Field,
    InList,
    IsNull,
    Like,
    Not,
    Or,
    OrderKey,
    Value,
)

SVI_KINDS = ("linreg_fit", "library_fit", "user_svi_fit", "batch")
NOT_NULL = frozenset({"id", "status", "kind", "model", "created", "step"})


def searchable_columns(spec: dict[str, Any] | None = None,
                       info: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The columns a search reads that copy a job's spec or info: method and guide (from its
    spec, at submit), final_loss (from its info, whenever that is written)."""
    values: dict[str, Any] = {}
    if spec is not None:
        kind = spec.get("kind")
        method = "svi" if kind in SVI_KINDS else spec.get("method")
        values["method"] = method if isinstance(method, str) else None
        guide = spec.get("guide_function") or spec.get("guide") if method == "svi" else None
        values["guide"] = guide[:255] if isinstance(guide, str) else None
    if info is not None:
        loss = info.get("final_loss")
        finite = isinstance(loss, int | float) and math.isfinite(loss)
        values["final_loss"] = float(loss) if finite and loss is not None else None
    return values


def search_jobs(
    session: Session, where: Expr | None = None, order: Sequence[OrderKey] = (),
    columns: Sequence[Field] = (), *, limit: int = 20, offset: int = 0,
    owner: str | None = None, status: str | None = None,
) -> list[tuple[Job, dict[str, Any]]]:  # fmt: skip
    """The jobs that match `where` (of `owner` only, when given), ordered by `order` and then
    newest first, one page; with each, the value of every field in `columns` (JSON-ready:
    times as ISO text, a non-finite number as None)."""
    query = compile_search(session.get_bind().dialect.name, where, order, columns,
                           owner=owner, status=status)  # fmt: skip
    rows = session.execute(query.limit(limit).offset(offset)).all()
    return [(row[0], {f.text: _ready(v) for f, v in zip(columns, row[1:], strict=True)})
            for row in rows]  # fmt: skip


def compile_search(
    dialect: str, where: Expr | None = None, order: Sequence[OrderKey] = (),
    columns: Sequence[Field] = (), *, owner: str | None = None, status: str | None = None,
) -> Select[*tuple[Any, ...]]:  # fmt: skip
    """The SELECT of search_jobs, without its page (bench/bench_search.py EXPLAINs it)."""
    sql = _Compiler(dialect)
    picked: list[Any] = [sql.value(f).label(f"c{i}") for i, f in enumerate(columns)]
    query: Select[*tuple[Any, ...]] = select(Job, *picked)
    query = query.where(Job.parent_id.is_(None))  # an MCMC job's units: see its record
    if where is not None:
        query = query.where(sql.expr(where, negated=False))
    if owner is not None:
        query = query.where(Job.owner == owner)
    if status is not None:
        query = query.where(Job.status == status)
    for key in order:
        # JSON has no order: a spec value sorts by number, then (for text) by its text
        spec = key.field.root == "spec"
        values = [sql.spec_number(key.field), sql.spec_text(key.field)] if spec else [
            sql.value(key.field)]  # fmt: skip
        for value in values:
            ordered = value.desc() if key.descending else value.asc()
            query = query.order_by(ordered if key.field.root in NOT_NULL else ordered.nulls_last())
    return query.order_by(Job.created_at.desc(), Job.id)


def _ready(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _moment(value: Value) -> datetime:
    """A time literal (kiln.query checked it parses) as an aware UTC datetime."""
    moment = parse_moment(str(value))
    assert moment is not None
    return moment


OPERATORS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
             ">": operator.gt, ">=": operator.ge}  # fmt: skip
SqlValue = SQLColumnExpression[Any]  # a column or an expression of one
_m = Metric.__table__.alias("latest")
COLUMNS = {
    "id": Job.id, "status": Job.status, "kind": Job.kind, "model": Job.model,
    "method": Job.method, "guide": Job.guide, "name": Job.name, "owner": Job.owner,
    "sweep": Job.sweep_id, "created": Job.created_at, "finished": Job.finished_at,
    "final_loss": Job.final_loss, "last_loss": Job.last_loss, "step": Job.step,
}  # fmt: skip


class _Compiler:
    """AST -> SQLAlchemy expressions for one dialect (spec's JSON differs by dialect)."""

    def __init__(self, dialect: str) -> None:
        self.postgres = dialect == "postgresql"

    # -- values (columns, order-by) ---------------------------------------------------------

    def value(self, field: Field) -> SqlValue:
        """The field's value per job (NULL when it has none; a spec value as JSON)."""
        if field.root in COLUMNS:
            return COLUMNS[field.root]
        if field.root == "spec":
            return Job.spec[field.parts]
        table, column, keys = self.related(field)
        query = select(column).where(table.job_id == Job.id, *keys)
        if table is Metric:
            query = query.order_by(Metric.step.desc()).limit(1)
        return query.scalar_subquery()

    def related(self, field: Field) -> tuple[Any, SqlValue, list[ColumnElement[bool]]]:
        """A tag's, site's or metric's table, value column, and the conditions that pick it."""
        if field.root == "tag":
            return JobTag, JobTag.value, [JobTag.key == field.parts[0]]
        if field.root == "params":
            site, stat = field.parts
            return Param, getattr(Param, stat), [Param.site == site]
        # the latest value: the row at the metric's highest step (the primary key's order)
        step = select(func.max(_m.c.step)).where(_m.c.job_id == Metric.job_id,
                                                  _m.c.name == Metric.name)  # fmt: skip
        return Metric, Metric.value, [Metric.name == field.parts[0],
                                      Metric.step == step.scalar_subquery()]  # fmt: skip

    def spec_text(self, field: Field) -> SqlValue:
        """A spec value that is a JSON string, as text; else NULL."""
        return case((self.json_type(field) == ("string" if self.postgres else "text"),
                     Job.spec[field.parts].as_string()))  # fmt: skip

    def spec_number(self, field: Field) -> SqlValue:
        """A spec value that is a JSON number, as a float; else NULL."""
        kinds = ("number",) if self.postgres else ("integer", "real")
        return case((self.json_type(field).in_(kinds),
                     cast(Job.spec[field.parts].as_string(), Float)))  # fmt: skip

    def json_type(self, field: Field) -> SqlValue:
        if self.postgres:
            return func.json_typeof(Job.spec[field.parts])
        # segments are [A-Za-z0-9_-] (kiln.query.SEGMENT): quoting them is safe; bound anyway
        path = "$" + "".join(f'."{p}"' for p in field.parts)
        return func.json_type(Job.spec, literal(path))

    # -- conditions -------------------------------------------------------------------------

    def expr(self, node: Expr, negated: bool) -> ColumnElement[bool]:
        """`node` as a condition that is never NULL where it matters: under a NOT (`negated`),
        every comparison on a nullable value also requires the value."""
        if isinstance(node, And):
            return and_(*(self.expr(n, negated) for n in node.items))
        if isinstance(node, Or):
            return or_(*(self.expr(n, negated) for n in node.items))
        if isinstance(node, Not):
            return not_(self.expr(node.item, not negated))
        field = node.field
        if field.root in ("tag", "params", "metrics"):
            return self.related_condition(node)
        if field.root == "spec":
            return self.spec_condition(node, negated)
        column = COLUMNS[field.root]
        if isinstance(node, IsNull):
            return column.is_not(None) if node.negated else column.is_(None)
        condition = self.compare(column, node)
        if negated and field.root not in NOT_NULL:
            return and_(condition, column.is_not(None))
        return condition

    def compare(self, column: SqlValue, node: Compare | InList | Like) -> ColumnElement[bool]:
        """`column` against the node's literal(s), times parsed."""
        timed = node.field.type == "time"
        if isinstance(node, Like):
            like = column.ilike(node.pattern)
            return not_(like) if node.negated else like
        if isinstance(node, InList):
            values = [_moment(v) if timed else v for v in node.values]
            return column.not_in(values) if node.negated else column.in_(values)
        value: Any = _moment(node.value) if timed else node.value
        condition: ColumnElement[bool] = OPERATORS[node.op](column, value)
        return condition

    def related_condition(self, node: Compare | InList | Like | IsNull) -> ColumnElement[bool]:
        table, column, keys = self.related(node.field)
        if isinstance(node, IsNull):  # has it (with a value: an SVI fit's r_hat is NULL)?
            having = select(table.job_id).where(*keys, column.is_not(None))
            return Job.id.in_(having) if node.negated else Job.id.not_in(having)
        return Job.id.in_(select(table.job_id).where(*keys, self.compare(column, node)))

    def spec_condition(self, node: Compare | InList | Like | IsNull,
                       negated: bool) -> ColumnElement[bool]:  # fmt: skip
        """A spec value against literals: text ones against a JSON string, numbers against a
        JSON number (so `spec.lr = 0.01` never matches the text '0.01')."""
        # NULL: the key is missing, or holds JSON null
        present: ColumnElement[bool] = Job.spec[node.field.parts].as_string().is_not(None)
        if isinstance(node, IsNull):
            return present if node.negated else not_(present)
        if isinstance(node, InList) and node.negated:  # present, and in neither list
            within = self.spec_condition(InList(node.field, node.values), negated=True)
            return and_(present, not_(within))
        values = node.values if isinstance(node, InList) else [getattr(node, "value", "")]
        parts: list[ColumnElement[bool]] = []
        for numeric in (False, True):
            picked = tuple(v for v in values if isinstance(v, str) != numeric)
            if not picked:
                continue
            value = self.spec_number(node.field) if numeric else self.spec_text(node.field)
            one = self.compare(value, InList(node.field, picked) if isinstance(node, InList)
                               else node)  # fmt: skip
            parts.append(and_(one, value.is_not(None)) if negated else one)
        return or_(*parts) if len(parts) > 1 else parts[0]

"""kiln.query: the parser's precedence, literals and every refusal, with its message."""

from __future__ import annotations

import pytest

from kiln.errors import SpecError
from kiln.query import PARAM_STATS, parse_columns, parse_order, parse_query
from kiln.querytree import (
    And,
    Compare,
    Field,
    InList,
    IsNull,
    Like,
    Not,
    Or,
    OrderKey,
)
from kiln.records import DIAGNOSTICS, STATS

STATUS = Field("status", "status")
LOSS = Field("final_loss", "final_loss")


def test_and_binds_tighter_than_or_and_not_tighter_than_and() -> None:
    parsed = parse_query("status = 'failed' or not final_loss > 1 AND final_loss < 3")
    assert parsed == Or((Compare(STATUS, "=", "failed"),
                         And((Not(Compare(LOSS, ">", 1)), Compare(LOSS, "<", 3)))))  # fmt: skip
    grouped = parse_query("(status = 'failed' OR final_loss > 1) AND final_loss < 3")
    assert isinstance(grouped, And) and isinstance(grouped.items[0], Or)


def test_in_like_is_null_and_quoting_read_as_written() -> None:
    name = Field("name", "name")
    assert parse_query("name NOT IN ('it''s', 'b')") == InList(name, ("it's", "b"), negated=True)
    assert parse_query("name like 'r%'") == Like(Field("name", "name"), "r%")
    assert parse_query("tag.a.b IS NOT NULL") == IsNull(Field("tag.a.b", "tag", ("a.b",)), True)
    assert parse_query("params.w.0.r_hat >= -1.5e-3") == Compare(
        Field("params.w.0.r_hat", "params", ("w.0", "r_hat")), ">=", -1.5e-3)  # fmt: skip
    assert parse_query("spec.lr <> 0.01") == Compare(Field("spec.lr", "spec", ("lr",)), "!=", 0.01)


def test_a_quoted_attack_is_only_a_string() -> None:
    attack = "'; DROP TABLE jobs; --"
    quoted = attack.replace("'", "''")
    assert parse_query(f"name = '{quoted}'") == Compare(Field("name", "name"), "=", attack)


def test_order_and_columns_parse_fields() -> None:
    created = Field("created", "created")
    assert parse_order("final_loss DESC, created") == (
        OrderKey(LOSS, True),
        OrderKey(created, False),
    )
    assert [f.text for f in parse_columns("id, name,metrics.mse")] == ["id", "name", "metrics.mse"]


def test_the_summaries_a_query_names_are_those_kiln_stores() -> None:
    assert PARAM_STATS == STATS + DIAGNOSTICS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("statsu = 'failed'", "character 1: unknown field `statsu`; did you mean `status`?"),
        ("status = 'faild'", "no status 'faild'; did you mean 'failed'?"),
        ("params.rugged.meen < 0", "unknown summary `meen`; did you mean `mean`?"),
        ("params.rugged < 0", "write params.SITE.STAT"),
        ("final_loss < 'a'", "`final_loss` compares with a number"),
        ("name = 3", "`name` compares with text in quotes"),
        ("created > 'yesterday'", "is not a date or time"),
        ("final_loss < nan", "expected a quoted text ('a') or a number, got `nan`"),
        ("final_loss < 1e999", "1e999 is not a finite number"),
        ("name = 'open", "character 8: this string has no closing quote"),
        ("name = 'a\x00'", "no control characters"),
        ("name = 'a' ; drop", "unexpected ';'"),
        ("status = 'failed' final_loss", "expected AND, OR or the end, got `final_loss`"),
        ("(status = 'failed'", "expected AND, OR or `)`, got the end"),
        ("final_loss LIKE 'a'", "LIKE is for text fields"),
        ("name IS 'a'", "expected NULL after IS"),
        ("", "expected a comparison"),
        ("x" * 4097, "at most 4096 characters"),
        ("(" * 33 + "step = 1" + ")" * 33, "nested more than 32 deep"),
        (" OR ".join(["step = 1"] * 65), "at most 64 comparisons"),
        ("step IN (" + ",".join(["1"] * 257) + ")", "at most 256 values"),
    ],
)
def test_bad_queries_are_refused_with_where_and_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(SpecError, match="^--where") as refused:
        parse_query(text)
    assert message in str(refused.value)


def test_bad_orders_and_columns_are_refused() -> None:
    with pytest.raises(SpecError, match="expected ASC, DESC"):
        parse_order("name sideways")
    with pytest.raises(SpecError, match="did you mean `final_loss`"):
        parse_columns("id,final_los")
    with pytest.raises(SpecError, match="given twice"):
        parse_columns("id,id")

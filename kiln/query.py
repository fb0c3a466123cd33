"""The job query language of `jobs list --where` and Client.search: text -> a typed, frozen AST.

    status = 'succeeded' AND (tag.study = 'a' OR params.rugged.mean < -0.2)
    NOT model IN ('linreg', 'hmm') AND created >= '2026-01-01' AND name LIKE 'rugged-%'

Grammar (keywords in any case):

    or_expr    := and_expr (OR and_expr)*
    and_expr   := not_expr (AND not_expr)*
    not_expr   := NOT not_expr | '(' or_expr ')' | comparison
    comparison := field op literal | field [NOT] IN '(' literal (',' literal)* ')'
                | field [NOT] LIKE 'pattern' | field IS [NOT] NULL
    op         := = | != | <> | < | <= | > | >=
    literal    := 'text' ('' is a quote) | a finite number

A hand-written tokenizer and recursive-descent parser: nothing is evaluated, and every size is
bounded. db/search.py compiles the AST to SQL with bound parameters. Base layer: imports only
kiln.errors.
"""

from __future__ import annotations

import difflib
import math
import re
from datetime import UTC, datetime

from kiln.errors import SpecError
from kiln.querytree import (
    PLAIN,
    PREFIXED,
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
    Token,
    Value,
)

MAX_QUERY_CHARS = 4096
MAX_COMPARISONS = 64
MAX_DEPTH = 32  # parentheses and NOTs, nested
MAX_IN_ITEMS = 256
MAX_ORDER_KEYS = 4
MAX_COLUMNS = 32
MAX_SPEC_DEPTH = 8  # spec.a.b.c...: path segments
# The posterior summaries a params.SITE.STAT field may name (kiln.records STATS + DIAGNOSTICS;
# a test checks they agree).
PARAM_STATS = ("mean", "sd", "q05", "q50", "q95", "r_hat", "ess_bulk", "ess_tail")
STATUSES = ("waiting", "queued", "running", "succeeded", "failed", "cancelled")

KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "like", "asc", "desc"})
OPERATORS = ("<=", ">=", "!=", "<>", "=", "<", ">")  # longest first

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
SEGMENT = re.compile(r"[A-Za-z0-9_\-]{1,255}")


def _fail(what: str, message: str, pos: int | None = None) -> SpecError:
    where = f" at character {pos + 1}" if pos is not None else ""
    return SpecError(f"{what}{where}: {message}", field=what.lstrip("-").replace("-", "_"))


def _shown(token: Token) -> str:
    if token.kind == "end":
        return "the end"
    text = token.text if len(token.text) <= 40 else token.text[:40] + "..."
    return f"'{text}'" if token.kind == "string" else f"`{text}`"


def tokenize(text: str, what: str = "--where") -> list[Token]:
    """The tokens of `text`, ending with an `end` token; SpecError for a character that starts
    none, an unterminated string, or a number that is not finite."""
    if len(text) > MAX_QUERY_CHARS:
        raise _fail(what, f"at most {MAX_QUERY_CHARS} characters (got {len(text)})")
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char.isspace():
            pos += 1
        elif char in "(),":
            tokens.append(Token(char, char, pos))  # type: ignore[arg-type]
            pos += 1
        elif char == "'":
            pos = _string(text, pos, tokens, what)
        elif number := NUMBER.match(text, pos):
            value: float | int = float(number[0]) if any(c in number[0] for c in ".eE") else int(
                number[0])  # fmt: skip
            if len(number[0]) > 40 or not math.isfinite(value):
                raise _fail(what, f"{number[0][:40]} is not a finite number", pos)
            tokens.append(Token("number", number[0], pos, value))
            pos = number.end()
        elif ident := IDENT.match(text, pos):
            word = ident[0]
            if word.lower() in KEYWORDS:
                tokens.append(Token("keyword", word.lower(), pos))
            else:
                tokens.append(Token("ident", word, pos))
            pos = ident.end()
        elif op := next((o for o in OPERATORS if text.startswith(o, pos)), None):
            tokens.append(Token("op", "!=" if op == "<>" else op, pos))
            pos += len(op)
        else:
            shown = char if char.isprintable() else repr(char)
            raise _fail(what, f"unexpected {shown!r}; write text in single quotes ('a')", pos)
    tokens.append(Token("end", "", len(text)))
    return tokens


def _string(text: str, start: int, tokens: list[Token], what: str) -> int:
    """Read the quoted string at `start` ('' is a quote) into tokens; the position after it."""
    pieces, pos = [], start + 1
    while True:
        end = text.find("'", pos)
        if end < 0:
            raise _fail(what, "this string has no closing quote (write '' for a quote in it)",
                        start)  # fmt: skip
        pieces.append(text[pos:end])
        if text.startswith("''", end):
            pieces.append("'")
            pos = end + 2
            continue
        value = "".join(pieces)
        if not value.isprintable():
            raise _fail(what, "a string holds no control characters (NUL, line breaks)", start)
        tokens.append(Token("string", value, start, value))
        return end + 1


def parse_field(word: str, what: str = "--where", pos: int | None = None) -> Field:
    """The field `word` names (`status`, `tag.study`, `params.rugged.mean`...); SpecError
    with a did-you-mean for a misspelt one."""
    root, _, rest = word.partition(".")
    if not rest and root in PLAIN:
        return Field(word, root)
    if root in PREFIXED and rest:
        parts = tuple(rest.split("."))
        if not all(SEGMENT.fullmatch(p) for p in parts):
            raise _fail(what, f"`{word[:80]}`: an empty or too long part", pos)
        if root == "params":
            return _params_field(word, parts, what, pos)
        if root == "spec" and len(parts) > MAX_SPEC_DEPTH:
            raise _fail(what, f"`{word[:80]}`: at most {MAX_SPEC_DEPTH} parts after spec.", pos)
        if root == "metrics" and (len(parts) > 1 or len(rest) > 64):
            raise _fail(what, f"`{word[:80]}`: a metric's name is one word (metrics.test_elbo)",
                        pos)  # fmt: skip
        # A tag key may hold dots (kiln.labels): tag.a.b is the tag `a.b`.
        return Field(word, root, (rest,) if root == "tag" else parts)
    if root in PREFIXED:
        example = {"tag": "tag.study", "spec": "spec.lr", "params": "params.sigma.mean",
                   "metrics": "metrics.test_accuracy"}[root]  # fmt: skip
        raise _fail(what, f"`{root}` needs a name after it, e.g. {example}", pos)
    known = [*PLAIN, *(f"{p}." for p in PREFIXED)]
    close = difflib.get_close_matches(word if rest == "" else root + ".", known, n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(f'`{c}`' for c in close)}? " if close else ""
    shown = word if len(word) <= 40 else word[:40] + "..."
    raise _fail(what, f"unknown field `{shown}`; {hint}fields: {', '.join(PLAIN)}, tag.KEY,"
                      " spec.PATH, params.SITE.STAT, metrics.NAME", pos)  # fmt: skip


def _params_field(word: str, parts: tuple[str, ...], what: str, pos: int | None) -> Field:
    if len(parts) < 2:
        raise _fail(what, f"`{word[:80]}`: write params.SITE.STAT, e.g. {word[:80]}.mean (STAT:"
                          f" {', '.join(PARAM_STATS)})", pos)  # fmt: skip
    site, stat = ".".join(parts[:-1]), parts[-1]
    if stat not in PARAM_STATS:
        close = difflib.get_close_matches(stat, PARAM_STATS, n=1, cutoff=0.5)
        hint = f"did you mean `{close[0]}`? " if close else ""
        raise _fail(what, f"`{word[:80]}`: unknown summary `{stat}`; {hint}have:"
                          f" {', '.join(PARAM_STATS)}", pos)  # fmt: skip
    return Field(word, "params", (site, stat))


class _Parser:
    def __init__(self, text: str, what: str) -> None:
        self.tokens = tokenize(text, what)
        self.what = what
        self.at = 0
        self.comparisons = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def kind(self) -> str:
        """The current token's kind (a call: mypy keeps no narrowing across a take())."""
        return self.tokens[self.at].kind

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def keyword(self, word: str) -> bool:
        if self.token.kind == "keyword" and self.token.text == word:
            self.at += 1
            return True
        return False

    def fail(self, expected: str, token: Token | None = None) -> SpecError:
        token = token or self.token
        return _fail(self.what, f"expected {expected}, got {_shown(token)}", token.pos)

    def or_expr(self, depth: int) -> Expr:
        items = [self.and_expr(depth)]
        while self.keyword("or"):
            items.append(self.and_expr(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self, depth: int) -> Expr:
        items = [self.not_expr(depth)]
        while self.keyword("and"):
            items.append(self.not_expr(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self, depth: int) -> Expr:
        if depth >= MAX_DEPTH:
            raise _fail(self.what, f"nested more than {MAX_DEPTH} deep", self.token.pos)
        if self.keyword("not"):
            return Not(self.not_expr(depth + 1))
        if self.token.kind == "(":
            self.take()
            inner = self.or_expr(depth + 1)
            if self.kind() != ")":
                raise self.fail("AND, OR or `)`")
            self.take()
            return inner
        return self.comparison()

    def comparison(self) -> Expr:
        start = self.token
        if start.kind != "ident":
            raise self.fail("a field (status, name, tag.KEY, params.SITE.STAT...) or `(`")
        self.take()
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise _fail(self.what, f"at most {MAX_COMPARISONS} comparisons", start.pos)
        field = parse_field(start.text, self.what, start.pos)
        if self.keyword("is"):
            negated = self.keyword("not")
            if not self.keyword("null"):
                raise self.fail("NULL after IS" + (" NOT" if negated else ""))
            return IsNull(field, negated)
        negated = self.keyword("not")
        if self.keyword("in"):
            return InList(field, self.in_list(field), negated)
        if self.keyword("like"):
            pattern = self.take()
            if pattern.kind != "string":
                raise self.fail("a quoted pattern ('rugged-%')", pattern)
            if field.type not in ("text", "json"):
                raise _fail(self.what, f"LIKE is for text fields, not `{field.text}`", pattern.pos)
            return Like(field, pattern.text, negated)
        if negated:
            raise self.fail("IN or LIKE after NOT")
        if self.token.kind != "op":
            raise self.fail(f"an operator (=, !=, <, <=, >, >=, IN, LIKE, IS) after `{field.text}`")
        op = self.take().text
        return Compare(field, op, self.literal(field))  # type: ignore[arg-type]

    def in_list(self, field: Field) -> tuple[Value, ...]:
        if self.take().kind != "(":
            raise self.fail("`(` after IN", self.tokens[self.at - 1])
        values = [self.literal(field)]
        while self.token.kind == ",":
            self.take()
            values.append(self.literal(field))
            if len(values) > MAX_IN_ITEMS:
                raise _fail(self.what, f"at most {MAX_IN_ITEMS} values in IN (...)", self.token.pos)
        if self.take().kind != ")":
            raise self.fail("`,` or `)`", self.tokens[self.at - 1])
        return tuple(values)

    def literal(self, field: Field) -> Value:
        token = self.take()
        if token.kind not in ("string", "number"):
            raise self.fail("a quoted text ('a') or a number", token)
        assert token.value is not None
        kind = field.type
        if kind == "number" and token.kind != "number":
            raise _fail(self.what, f"`{field.text}` compares with a number, not {_shown(token)}",
                        token.pos)  # fmt: skip
        if kind in ("text", "time") and token.kind != "string":
            example = "'2026-01-31' or '2026-01-31T12:00'" if kind == "time" else "'a'"
            raise _fail(self.what, f"`{field.text}` compares with text in quotes ({example}),"
                                   f" not {_shown(token)}", token.pos)  # fmt: skip
        if kind == "time" and parse_moment(str(token.value)) is None:
            example = "'2026-01-31' or '2026-01-31T12:00:00Z'"
            raise _fail(self.what, f"`{field.text}`: {_shown(token)} is not a date or time"
                                   f" (e.g. {example})", token.pos)  # fmt: skip
        if field.root == "status" and token.value not in STATUSES:
            close = difflib.get_close_matches(str(token.value), STATUSES, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise _fail(self.what, f"no status {_shown(token)}; {hint}have: {', '.join(STATUSES)}",
                        token.pos)  # fmt: skip
        return token.value


def parse_moment(text: str) -> datetime | None:
    """An ISO date or date-time as an aware UTC datetime (a naive one is UTC); None if not."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_query(text: str, what: str = "--where") -> Expr:
    """The AST of a query; SpecError (position, what was expected) for anything else."""
    parser = _Parser(text, what)
    if parser.token.kind == "end":
        raise parser.fail("a comparison, e.g. status = 'succeeded'")
    expr = parser.or_expr(0)
    if parser.kind() != "end":
        raise parser.fail("AND, OR or the end")
    return expr


def parse_order(text: str, what: str = "--order-by") -> tuple[OrderKey, ...]:
    """`field [asc|desc] (, field [asc|desc])*`: newest first is `created desc`."""
    tokens, at, keys = tokenize(text, what), 0, []
    while True:
        token = tokens[at]
        if token.kind != "ident":
            raise _fail(what, f"expected a field, got {_shown(token)}", token.pos)
        field = parse_field(token.text, what, token.pos)
        at += 1
        descending = False
        if tokens[at].kind == "keyword" and tokens[at].text in ("asc", "desc"):
            descending = tokens[at].text == "desc"
            at += 1
        keys.append(OrderKey(field, descending))
        if len(keys) > MAX_ORDER_KEYS:
            raise _fail(what, f"at most {MAX_ORDER_KEYS} fields", token.pos)
        if tokens[at].text == "" and tokens[at].kind == "end":
            return tuple(keys)
        if tokens[at].kind != ",":
            raise _fail(what, f"expected ASC, DESC, `,` or the end, got {_shown(tokens[at])}",
                        tokens[at].pos)  # fmt: skip
        at += 1


def parse_columns(text: str, what: str = "--columns") -> tuple[Field, ...]:
    """Comma-separated fields (`id,name,final_loss,params.rugged.mean`), each at most once."""
    if len(text) > MAX_QUERY_CHARS:
        raise _fail(what, f"at most {MAX_QUERY_CHARS} characters (got {len(text)})")
    words = [w.strip() for w in text.split(",")]
    if len(words) > MAX_COLUMNS:
        raise _fail(what, f"at most {MAX_COLUMNS} columns (got {len(words)})")
    fields: list[Field] = []
    for word in words:
        if not IDENT.fullmatch(word):
            raise _fail(what, f"`{word[:40]}` is not a field name (a,b,c without spaces"
                              " inside a name)")  # fmt: skip
        field = parse_field(word, what)
        if field in fields:
            raise _fail(what, f"`{word}` given twice")
        fields.append(field)
    return tuple(fields)

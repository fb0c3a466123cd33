"""One SpecError from a pydantic ValidationError: a line per bad field, named as the user
wrote it (`spec.steps`, `spec.priors.rugged.scale`), without the discriminated unions' tags
or pydantic's wording, and never a repr that costs more than it shows."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from pydantic import ValidationError

from kiln.errors import SpecError

PRIOR_TAGS = ("normal", "uniform")
_BOUNDS = (
    ("Input should be greater than or equal to", "must be >="),
    ("Input should be greater than", "must be >"),
    ("Input should be less than or equal to", "must be <="),
    ("Input should be less than", "must be <"),
    ("Input should be a finite number", "must be a finite number"),
)


def _describe(error: Any, job_kinds: Collection[str]) -> str:
    loc = [str(p) for p in error["loc"]]
    # a discriminated union puts the kind's tag first: `spec.linreg_fit.steps` reads `spec.steps`
    if loc and loc[0] in job_kinds:
        loc = loc[1:]
    # ...and a prior's dist after its site: `spec.priors.rugged.normal.scale`
    for i in range(len(loc) - 2):
        if loc[i] == "priors" and loc[i + 2] in PRIOR_TAGS:
            del loc[i + 2]
            break
    where = ".".join(_clip(p, 40) for p in loc if not p.startswith("function-after"))
    message = re.sub(r"^Value error, ", "", str(error["msg"]))
    for pydantic_says, we_say in _BOUNDS:
        message = message.replace(pydantic_says, we_say)
    message = re.sub(r"\b\d{16,}\b", lambda m: f"{float(m.group()):g}", message)  # 1e+38
    if error["type"] == "literal_error":
        message = "must be one of " + message.removeprefix("Input should be ")
    got = error.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {_short(got)})"
    if error["type"] == "literal_error" and isinstance(got, str):  # `AutoNormall`: name the close
        expected = str((error.get("ctx") or {}).get("expected", ""))
        shown += did_you_mean(got, re.findall(r"'([^']*)'", expected))
    return f"spec.{where}: {message}{shown}" if where else f"spec: {message}{shown}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, int) and value.bit_length() > 256:  # repr of a huge int is refused
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, str | bytes | list | tuple) and len(value) > 10 * limit:
        value = value[: 10 * limit]  # repr of a long value costs its length
    return _clip(repr(value), limit)


def spec_error(e: ValidationError, job_kinds: Collection[str]) -> SpecError:
    """The SpecError for `e`; `job_kinds` are the union tags to leave out of a field's path."""
    problems = [_describe(err, job_kinds) for err in e.errors()]
    first = [str(p) for p in e.errors()[0]["loc"] if str(p) not in job_kinds]
    return SpecError("; ".join(problems), field=first[0] if first else None)


def did_you_mean(word: str, choices: Collection[str], limit: int = 3) -> str:
    """`; did you mean `x`?` (or `x` or `y`) when `word` is spelt like one of `choices`, else
    "": the tail of an error message that names an unknown model, column, site, guide or key.

    Only the best matches are named (those within 0.05 of the best ratio): `AutoNormall` is
    `AutoNormal`, not also `AutoDiagonalNormal`. Only the first 200 characters of `word` and
    of each of the first 10,000 choices are compared (difflib is quadratic in length)."""
    import difflib

    word = word[:200]
    scored = []
    for choice in list(choices)[:10_000]:
        matcher = difflib.SequenceMatcher(None, word.lower(), choice[:200].lower())
        if matcher.real_quick_ratio() >= CLOSE and matcher.quick_ratio() >= CLOSE:
            ratio = matcher.ratio()
            if ratio >= CLOSE:
                scored.append((ratio, choice))
    if not scored:
        return ""
    best = max(r for r, _ in scored)
    close = [c for r, c in sorted(scored, key=lambda rc: -rc[0]) if r >= best - 0.05][:limit]
    return f"; did you mean {' or '.join(f'`{c}`' for c in close)}?"


CLOSE = 0.7  # difflib ratio: `stpes`/`steps` 0.8, `isocod`/`isocode` 0.92, `lrr`/`lr` 0.8

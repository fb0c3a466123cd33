"""`--until` targets: "r_hat<1.01,ess_bulk>400" parsed into {diagnostic: bound}."""

from __future__ import annotations

import re

# One convergence target: a diagnostic, a comparison, a finite number.
UNTIL_STATS = {"r_hat": "<", "ess_bulk": ">", "ess_tail": ">"}
_UNTIL_TERM = re.compile(r"\s*(r_hat|ess_bulk|ess_tail)\s*([<>])\s*([0-9]+(?:\.[0-9]*)?)\s*")


def parse_until(text: str) -> dict[str, float]:
    """`r_hat<1.01,ess_bulk>400` -> {"r_hat": 1.01, "ess_bulk": 400.0}; ValueError naming the
    bad term. r_hat takes `<` (a value > 1), the ESSs `>` (a positive value)."""
    targets: dict[str, float] = {}
    for term in text.split(","):
        m = _UNTIL_TERM.fullmatch(term)
        if m is None:
            raise ValueError(
                f"until: `{term.strip()}` is not a target; write e.g. r_hat<1.01,ess_bulk>400"
                f" (have: {', '.join(k + op for k, op in UNTIL_STATS.items())})"
            )
        name, op, value = m.group(1), m.group(2), float(m.group(3))
        if op != UNTIL_STATS[name]:
            raise ValueError(f"until: {name} takes `{UNTIL_STATS[name]}` (got `{op}`)")
        if name in targets:
            raise ValueError(f"until: {name} is given twice")
        if name == "r_hat" and not 1.0 < value < 2.0:
            raise ValueError(f"until: r_hat<{value}: the target must lie between 1 and 2")
        if name != "r_hat" and not 0 < value <= 1e7:
            raise ValueError(f"until: {name}>{value}: the target must be positive and finite")
        targets[name] = value
    return targets

"""`kiln show`'s lines for an MCMC job's units of work and its --until checks."""

from __future__ import annotations

from collections import Counter

from kiln.jobinfo import McmcInfo


def mcmc_lines(info: McmcInfo) -> list[str]:
    """`units ...`, `resumed ...` and `until ...` lines (none for a job without them)."""
    lines: list[str] = []
    if info.units:
        workers = Counter(str(u.get("worker") or "?") for u in info.units)
        on = ", ".join(f"{w}: {n}" for w, n in sorted(workers.items()))
        engines = sorted({str(u["engine"]) for u in info.units if u.get("engine")})
        lines.append(f"units      {len(info.units)} on {len(workers)} worker"
                     f"{'s' if len(workers) != 1 else ''} ({on})"
                     + (f"; engine {', '.join(engines)}" if engines else ""))  # fmt: skip
        compiled = [u["step"] for u in info.units if isinstance(u.get("step"), dict)]
        if compiled:
            parts = []
            for s in compiled:
                how = str(s.get("compiler") or "plain")
                if s.get("inductor_from") is not None:
                    how = f"inductor from iteration {s['inductor_from']}"
                parts.append(how)
            steps = sum(int(s.get("leapfrog_steps") or 0) for s in compiled)
            lines.append(f"step       {'; '.join(parts)}; {steps:,} lockstep leapfrog steps")
        for u in info.units:
            if u.get("resumed_at"):
                at = ", ".join(str(i) for i in u["resumed_at"])
                lines.append(f"resumed    unit {u.get('id')} (chains {u.get('first')}-"
                             f"{int(u.get('first', 0)) + int(u.get('count', 1)) - 1}) at"
                             f" iteration {at}, attempt {u.get('attempts')}")  # fmt: skip
    until = info.until
    if until:
        targets = ", ".join(
            f"{k}{'<' if k == 'r_hat' else '>'}{v:g}" for k, v in dict(until["targets"]).items()
        )
        checks = list(until.get("checks") or [])
        last = checks[-1] if checks else {}
        if until.get("met"):
            lines.append(f"until      {targets}: met after {until.get('draws')} draws per chain"
                         f" ({len(checks)} checks)")  # fmt: skip
        else:
            failing = ", ".join(last.get("failing") or []) or "?"
            lines.append(f"until      {targets}: NOT met at the cap of {until.get('cap')} draws;"
                         f" failing: {failing}")  # fmt: skip
        for c in checks[-5:]:
            values = ", ".join(
                f"{k} {c[k]:.4g}" for k in ("r_hat", "ess_bulk", "ess_tail") if c.get(k) is not None
            )
            lines.append(f"  check    {c.get('draws')} draws: {values}")
    return lines

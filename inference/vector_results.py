"""Results of a vectorised batch: a MemberResult per member and the ManyResult that holds them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from kiln.records import STATS, SiteStats


@dataclass(frozen=True, slots=True)
class MemberResult:
    """One member of a batch: how it ended and what its guide says about each site."""

    index: int
    seed: int
    status: str  # "ok" or "failed"
    final_loss: float  # mean loss over the last 100 steps it ran (NaN when it failed at once)
    stats: tuple[SiteStats, ...] = ()  # each site's summary, shaped as a single fit's
    reason: str | None = None
    failed_step: int | None = None
    draws: dict[str, NDArray[np.float32]] = field(default_factory=dict)  # site -> (num_samples,)
    state: bytes | None = None  # its guide as a single fit's fitted state (inference.state)
    # constrained, by parameter name
    guide_params: dict[str, NDArray[np.float32]] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, dict[str, float]]:
        """site -> {mean, sd, q05, q50, q95} (empty for a failed member)."""
        return {st.site: {n: float(getattr(st, n)) for n in STATS} for st in self.stats}


@dataclass(frozen=True, slots=True)
class ManyResult:
    """A vectorised batch: one MemberResult per member and the loss curves, (steps, members)."""

    members: tuple[MemberResult, ...]
    losses: NDArray[np.float64]  # (steps, K); NaN from the step a member failed
    sites: tuple[str, ...]
    seeds: tuple[int, ...]

    @property
    def ok(self) -> tuple[int, ...]:
        return tuple(m.index for m in self.members if m.status == "ok")

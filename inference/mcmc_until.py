"""`--until`: whether an MCMC unit's chains meet their convergence targets so far."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from inference.mcmc_chain import _replay
from inference.potential import Potential
from kiln.diagnostics import all_diagnostics

# Per chain, per deterministic site: its values, one array per check.
Replayed = list[dict[str, list[NDArray[Any]]]]


def until_check(
    potential: Potential, kept: list[torch.Tensor], replayed: Replayed,
    until: Mapping[str, float], model: Callable[..., Any], tensors: dict[str, Any],
    filename: str,
) -> dict[str, Any]:  # fmt: skip
    """Rank-normalised R-hat and ESS of every site (latent and deterministic, as the job
    stores them) over the chains' draws so far (`kept`: unconstrained positions (C, D), one
    per draw): the draws, the sites failing the targets, and the worst values.

    `replayed` keeps each chain's deterministic-site values between checks (filled here):
    only the draws made since the last check run the model."""
    z = torch.stack(kept, dim=1)
    count = z.shape[0]
    latent = potential.constrain(z.reshape(-1, potential.dim))
    draws = {s: v.reshape(count, -1, *v.shape[1:]).numpy() for s, v in latent.items()}
    if not replayed:
        replayed.extend({} for _ in range(count))
    done = sum(len(a) for a in next(iter(replayed[0].values()), []))
    new = z.shape[1] - done
    for c in range(count):  # only the draws not replayed at an earlier check
        part = {s: torch.as_tensor(v[c, done:]) for s, v in draws.items()}
        values, deterministic = _replay(model, tensors, part, new, filename, None)
        for s in deterministic:
            replayed[c].setdefault(s, []).append(values[s])
    for s in replayed[0]:
        draws[s] = np.stack([np.concatenate(replayed[c][s]) for c in range(count)])
    diagnostics = all_diagnostics(draws)
    worst = {"r_hat": -np.inf, "ess_bulk": np.inf, "ess_tail": np.inf}
    failing: list[str] = []
    for site, d in diagnostics.items():
        values = {"r_hat": d[0], "ess_bulk": d[1], "ess_tail": d[2]}
        bad = False
        for name, v in values.items():
            finite = v[np.isfinite(v)]
            if finite.size == 0:
                continue
            extreme = float(finite.max() if name == "r_hat" else finite.min())
            worst[name] = (
                max(worst[name], extreme) if name == "r_hat" else min(worst[name], extreme)
            )
            if name in until:
                bad |= extreme >= until[name] if name == "r_hat" else extreme <= until[name]
        if bad:
            failing.append(site)
    return {"draws": len(kept), "failing": failing,
            **{k: (round(v, 4) if np.isfinite(v) else None) for k, v in worst.items()}}  # fmt: skip

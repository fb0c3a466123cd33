"""ArviZ's `warmup_posterior` group of an MCMC fit's warmup draws (read by kiln.warmup when
`jobs export --warmup` asks for them), dims named as in the posterior."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from kiln.export_loglik import axis_names, plate_dims


class WarmupResults(Protocol):
    """What this module reads of kiln.export.JobResults (which imports this module)."""

    info: dict[str, Any]
    warmup: dict[str, np.ndarray]
    chains: int


def warmup_groups(r: WarmupResults) -> dict[str, Any]:
    """`warmup_posterior` (chain, draw, *dims) of a result that holds warmup draws
    (chain-major, (chains * warmup, *shape)); nothing otherwise."""
    if not r.warmup:
        return {}
    import xarray as xr

    plates = plate_dims(r)  # type: ignore[arg-type]  # reads `info` only
    per_chain = len(next(iter(r.warmup.values()))) // r.chains
    variables = {}
    for site, values in r.warmup.items():
        dims = ("chain", "draw", *axis_names(site, values.ndim - 1, plates.get(site), r.warmup))
        variables[site] = (dims, values.reshape(r.chains, per_chain, *values.shape[1:]))
    coords = {"chain": np.arange(r.chains), "draw": np.arange(per_chain)}
    return {"warmup_posterior": xr.Dataset(variables, coords=coords)}

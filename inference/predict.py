"""Posterior predictive from a stored fit: rebuild the guide from its fitted state, then draw.

The guide is rebuilt in this process from the bytes dump_state() wrote after the fit (never
from the fitting process's memory): the model is built again from the fit's spec and data, the
param store is loaded, and one call of the guide sets up its prototype with those parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyro
import torch
from numpy.typing import NDArray
from pyro.infer import Predictive

from inference.fit import resolve_device
from inference.guides import make_guide
from inference.models import MODELS
from inference.posterior import posterior_guide
from inference.state import load_state
from kiln.errors import SpecError
from kiln.tables import Design, build_design


@dataclass
class Prediction:
    """Draws by site, as (kind, array shaped (num_samples, *shape)), and facts about the rows."""

    sites: dict[str, tuple[str, NDArray[Any]]]
    design: Design
    info: dict[str, Any] = field(default_factory=dict)


def interval_coverage(
    draws: NDArray[np.float64], observed: NDArray[np.float64], mass: float = 0.9
) -> float | None:
    """Share of finite `observed` values inside the central `mass` interval of their draws."""
    known = np.isfinite(observed)
    if not known.any():
        return None
    tail = (1.0 - mass) / 2
    low, high = np.quantile(draws[:, known], (tail, 1.0 - tail), axis=0)
    inside = (observed[known] >= low) & (observed[known] <= high)
    return float(inside.mean())


def predict(
    model_name: str,
    fit_frame: pd.DataFrame,
    *,
    formula: str,
    guide: str,
    state: bytes,
    num_samples: int,
    seed: int,
    priors: Mapping[str, Mapping[str, float | str]] | None = None,
    new_frame: pd.DataFrame | None = None,
    device: str = "cpu",
) -> Prediction:
    """`num_samples` draws of the latent sites, the regression `mean` and `obs`, in one
    vectorised Predictive pass, for the fit's own rows or for the rows of `new_frame`.
    """
    if model_name not in MODELS:
        raise SpecError(f"unknown model `{model_name}` (have: {', '.join(MODELS)})", field="model")
    device = resolve_device(device)
    fitted = build_design(fit_frame, formula)
    rows = (
        fitted
        if new_frame is None
        else build_design(new_frame, formula, reference=fit_frame, require_response=False)
    )
    as_tensor: dict[str, Any] = {"dtype": torch.float32, "device": device}
    X_fit = torch.as_tensor(fitted.X, **as_tensor)
    y_fit = torch.as_tensor(fitted.y, **as_tensor)

    pyro.clear_param_store()
    model = MODELS[model_name](fitted.terms, priors, device=device, record_mean=True)
    rebuilt = make_guide(guide, model)
    load_state(state, map_location=device)
    with torch.no_grad():
        rebuilt(X_fit, y=y_fit)  # sets up the prototype; its parameters come from the store
    # A Laplace guide's covariance is the Hessian at the fit's data, not at the new rows.
    drawing_guide = posterior_guide(rebuilt, (X_fit,), {"y": y_fit})

    pyro.set_rng_seed(seed)
    latent = model.latent_sites
    predictive = Predictive(
        model, guide=drawing_guide, num_samples=num_samples,
        return_sites=[*latent, *model.row_sites], parallel=True,
    )  # fmt: skip
    with torch.no_grad():
        drawn = predictive(torch.as_tensor(rows.X, **as_tensor))

    def as_numpy(site: str, *shape: int) -> NDArray[np.float32]:
        values: NDArray[np.float32] = drawn[site].detach().cpu().numpy()
        return values.reshape(num_samples, *shape)

    sites: dict[str, tuple[str, NDArray[Any]]] = {s: ("posterior", as_numpy(s)) for s in latent}
    n = len(rows.y)
    sites["mean"] = ("deterministic", as_numpy("mean", n))
    sites["obs"] = ("predictive", as_numpy("obs", n))
    sites["__X__"] = ("data", rows.X[None, ...])
    sites["__y__"] = ("data", rows.y[None, ...])
    sites["__row__"] = ("data", rows.row_index[None, ...])
    info: dict[str, Any] = {
        "rows": n,
        "rows_dropped": rows.rows_dropped,
        "terms": list(rows.terms),
        "response": rows.response,
        "observed": int(np.isfinite(rows.y).sum()),
        "coverage_90": interval_coverage(sites["obs"][1], rows.y),
        "device": device,
    }
    return Prediction(sites=sites, design=rows, info=info)

"""prepare_fit(): a built-in model, its guide and its data tensors, from plain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyro
import torch

from inference.guides import make_guide
from inference.models import MODELS
from kiln.errors import SpecError
from kiln.tables import Design, build_design, member_design


@dataclass
class FitProblem:
    """Everything run_svi needs, plus what the results are named after."""

    model: Any
    guide: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    latent_sites: tuple[str, ...]
    jit_safe: bool
    device: str
    info: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> str:
    """`auto` is cuda when a GPU is present; asking for cuda without one is a clear error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("device `cuda` asked for, but this worker has no GPU", field="device")
    return device


def prepare_fit(
    model_name: str,
    frame: pd.DataFrame,
    *,
    formula: str,
    guide: str,
    seed: int,
    priors: Mapping[str, Mapping[str, float | str]] | None = None,
    device: str = "cpu",
    init: str = "auto",
    rows: Mapping[str, Any] | None = None,
) -> FitProblem:
    """Clear the param store, seed Pyro, build the model, the guide and the data tensors.

    init `auto` starts the guide at the model's own data-based values (least squares for
    linreg); `median` is Pyro's default (the prior's median), as in the tutorial.
    """
    if model_name not in MODELS:
        raise SpecError(f"unknown model `{model_name}` (have: {', '.join(MODELS)})", field="model")
    device = resolve_device(device)
    design: Design
    if rows:  # a sweep member: one group's rows and/or a bootstrap resample (counts per row)
        design, counts = member_design(frame, formula, **rows)
        X_np, y_np = np.repeat(design.X, counts, axis=0), np.repeat(design.y, counts)
    else:
        design = build_design(frame, formula)
        X_np, y_np = design.X, design.y
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = MODELS[model_name](design.terms, priors, device=device)
    X = torch.as_tensor(X_np, dtype=torch.float32, device=device)
    y = torch.as_tensor(y_np, dtype=torch.float32, device=device)
    return FitProblem(
        model=model,
        guide=make_guide(guide, model, model.initial_values(X, y) if init == "auto" else None),
        args=(X,),
        kwargs={"y": y},
        latent_sites=model.latent_sites,
        jit_safe=True,
        device=device,
        info=design.facts,
    )

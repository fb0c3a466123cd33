"""Autoguide names -> guide factories; what `guide=` in a spec may say."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyro.infer import autoguide

from kiln.catalog import GUIDES
from kiln.errors import SpecError

# Each takes the model and keyword options (init_loc_fn...).
_FACTORIES: dict[str, Callable[..., autoguide.AutoGuide]] = {
    "AutoNormal": autoguide.AutoNormal,
    "AutoDiagonalNormal": autoguide.AutoDiagonalNormal,
    "AutoMultivariateNormal": autoguide.AutoMultivariateNormal,
    "AutoLowRankMultivariateNormal": autoguide.AutoLowRankMultivariateNormal,
    "AutoDelta": autoguide.AutoDelta,
    "AutoLaplaceApproximation": autoguide.AutoLaplaceApproximation,
}
assert set(_FACTORIES) == set(GUIDES), "kiln.catalog.GUIDES and inference.guides disagree"


def make_guide(
    name: str, model: Callable[..., Any], init_values: dict[str, Any] | None = None
) -> autoguide.AutoGuide:
    """Build the autoguide called `name` for `model`, started at `init_values` when given."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise SpecError(
            f"unknown guide `{name}` (have: {', '.join(GUIDES)})", field="guide"
        ) from None
    if init_values is None:
        return factory(model)
    init = autoguide.initialization.init_to_value(
        values=init_values, fallback=autoguide.initialization.init_to_median
    )
    return factory(model, init_loc_fn=init)

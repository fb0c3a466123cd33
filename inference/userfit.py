"""prepare_user_fit(): a user's own model (from its source text), its guide and data tensors."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import pyro
import pyro.poutine as poutine
import torch
from numpy.typing import NDArray
from pyro.infer import Predictive
from pyro.poutine.util import site_is_subsample

from inference.fit import FitProblem, resolve_device
from inference.guides import make_guide
from inference.posterior import posterior_guide
from inference.usercode import describe_exception, get_function, load_module, to_tensors
from kiln.errors import KilnError, ModelError


def user_model(function: Callable[..., Any], filename: str) -> Callable[..., Any]:
    """The user's function, raising ModelError with the line of their file when it fails."""

    def model(**data: Any) -> Any:
        try:
            return function(**data)
        except KilnError:
            raise
        except Exception as e:
            raise ModelError(f"the model raised {describe_exception(e, filename)}") from e

    model.__name__ = getattr(function, "__name__", "model")
    return model


def site_names(model: Callable[..., Any], data: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(latent, deterministic) site names, in the order the model visits them."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(model).get_trace(**data)
    latent, deterministic = [], []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):  # a plate's own site
            continue
        if (site["infer"] or {}).get("_deterministic"):
            deterministic.append(name)
        elif not site["is_observed"]:
            latent.append(name)
    if not latent:
        raise ModelError("the model has no latent sample site (every pyro.sample is observed)")
    return latent, deterministic


def prepare_user_fit(
    source: str,
    filename: str,
    function: str,
    data: Mapping[str, Any],
    *,
    guide: str,
    guide_function: str | None,
    seed: int,
    device: str = "cpu",
) -> FitProblem:
    """Clear the param store, seed Pyro, load the user's file and build model, guide, data.

    `guide_function` names a guide in the same file; otherwise `guide` is an autoguide name.
    """
    device = resolve_device(device)
    module = load_module(source, filename)
    model = user_model(get_function(module, function, filename), filename)
    tensors = to_tensors(data, device, getattr(module, "DTYPES", None))
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    latent, deterministic = site_names(model, tensors)
    if guide_function:
        chosen = user_model(get_function(module, guide_function, filename), filename)
    else:
        chosen = make_guide(guide, model)
    return FitProblem(
        model=model,
        guide=chosen,
        args=(),
        kwargs=tensors,
        latent_sites=(*latent, *deterministic),
        jit_safe=False,
        device=device,
        info={"latent_sites": latent, "deterministic_sites": deterministic},
    )


def draw_sites(
    model: Callable[..., Any],
    guide: Any,
    data: Mapping[str, Any],
    sites: Sequence[str],
    num_samples: int,
) -> dict[str, NDArray[Any]]:
    """`num_samples` draws of `sites` from the fitted guide, (num_samples, *site_shape) each.

    One model run per draw: a user's model is not assumed to be batch-safe.
    """
    predictive = Predictive(
        model,
        guide=posterior_guide(guide, (), dict(data)),
        num_samples=num_samples,
        return_sites=list(sites),
        parallel=False,
    )
    with torch.no_grad(), poutine.block():
        draws = predictive(**data)
        nodes = poutine.trace(model).get_trace(**data).nodes
    shapes = {site: tuple(cast(torch.Tensor, nodes[site]["value"]).shape) for site in sites}
    return {
        site: draws[site].detach().cpu().numpy().reshape(num_samples, *shapes[site])
        for site in sites
    }

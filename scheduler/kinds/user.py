"""Submit-time check of a fit of a user's own model file (SVI or MCMC): parsed, never run."""

from __future__ import annotations

from collections.abc import Mapping

from kiln.errors import SpecError
from kiln.jobinfo import McmcInfo, SviInfo
from kiln.specs import UserMcmcFitSpec, UserSviFitSpec
from kiln.userdata import describe, parse_user_data
from scheduler.kinds.base import (
    CheckContext,
    Checked,
    NewDataset,
    Upload,
    device_fits_queue,
    require_data,
)
from scheduler.limits import count
from scheduler.usermodel import check_data_names, check_source


def data_rows(data: Mapping[str, object]) -> int:
    """The length of the longest list in the data (a CSV's row count)."""
    return max((len(v) for v in data.values() if isinstance(v, list)), default=1)


def check_user_fit(
    spec: UserSviFitSpec | UserMcmcFitSpec, upload: Upload, ctx: CheckContext
) -> Checked:
    """A syntax error, a missing function and data names the model does not take are refused
    here, before anything is written (scheduler.usermodel parses the file with ast)."""
    if isinstance(spec, UserSviFitSpec):
        ctx.limits.check_steps(spec.steps)
    elif spec.total_steps > ctx.limits.max_steps:
        raise SpecError(
            f"spec: {count(spec.total_steps)} steps (chains x (warmup + samples)); at most"
            f" {ctx.limits.max_steps} (KILN_MAX_STEPS sets the cap)",
            field="steps",
        )
    device_fits_queue(spec)
    if isinstance(spec, UserMcmcFitSpec) and spec.device == "cuda":
        raise SpecError(
            "MCMC samples on the CPU (Kiln's sampler keeps its chains' state there; sampling"
            " on CUDA is not built): drop --device cuda (--queue gpu still runs it on a GPU"
            " worker's CPU)",
            field="device",
        )
    if upload.source is None:
        raise SpecError(f"{spec.model_file}: the model file's text is missing", field="model")
    guide = spec.guide_function if isinstance(spec, UserSviFitSpec) else None
    functions = [spec.model_function, *([guide] if guide else [])]
    signatures = check_source(upload.source, spec.model_file, functions)
    content, name = require_data(upload, f"a fit of {spec.model}")
    data_format, data = parse_user_data(content, name)
    for signature in signatures.values():
        check_data_names(signature, data, name)
    facts = {"format": data_format, "shapes": describe(data)}
    info = SviInfo(data=facts) if isinstance(spec, UserSviFitSpec) else McmcInfo(data=facts)
    return Checked(
        spec=spec,
        model=spec.model,
        info=info,
        total_steps=spec.total_steps,
        dataset=NewDataset(content, name, data_format, list(data), data_rows(data)),
        source=upload.source,
        predict_rows=data_rows(data),
    )

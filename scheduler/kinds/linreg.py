"""Submit-time check of a linreg fit: the CSV, the formula's terms, the priors."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from kiln.catalog import LINREG_RESERVED_SITES
from kiln.errors import SpecError
from kiln.jobinfo import SviInfo
from kiln.specs import FitSpec
from kiln.tables import MAX_COLUMN_NAME, Design, build_design, read_csv_bytes
from scheduler.kinds.base import (
    CheckContext,
    Checked,
    NewDataset,
    Upload,
    device_fits_queue,
    require_data,
)

MAX_SITE_NAME = MAX_COLUMN_NAME  # params.site and samples.site hold 255 characters


@dataclass(frozen=True, slots=True)
class LinregData:
    """A linreg fit's data as checked: the table and the formula's design on it."""

    frame: pd.DataFrame
    design: Design

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]


def check_linreg_data(spec: FitSpec, content: bytes, data_name: str) -> LinregData:
    """The CSV, the formula's terms and the priors' sites; raises on a bad column, formula or
    prior before anything is written."""
    frame = read_csv_bytes(content, data_name)
    design = build_design(frame, spec.formula)
    sites = (*design.terms, "sigma")
    long = [term for term in design.terms if len(term) > MAX_SITE_NAME]
    if long:
        raise SpecError(
            f"formula term `{long[0][:60]}...` is {len(long[0])} characters; a term names a"
            f" site of the fit, at most {MAX_SITE_NAME}: write the term shorter",
            field="formula",
        )
    clash = sorted(set(design.terms) & set(LINREG_RESERVED_SITES))
    if clash:
        raise SpecError(f"formula term `{clash[0]}` clashes with a model site; rename the column")
    unknown = sorted(set(spec.priors) - set(sites))
    if unknown:
        raise SpecError(
            f"prior for `{unknown[0]}`: no such site (sites: {', '.join(sites)})", field="priors"
        )
    return LinregData(frame, design)


def check_linreg_fit(spec: FitSpec, upload: Upload, ctx: CheckContext) -> Checked:
    """Everything about a linreg fit that can be checked before anything is written."""
    ctx.limits.check_steps(spec.steps)
    device_fits_queue(spec)
    content, name = require_data(upload, "a linreg fit")
    data = check_linreg_data(spec, content, name)
    return Checked(
        spec=spec,
        model=spec.model,
        info=SviInfo(data=data.design.facts),
        total_steps=spec.steps,
        dataset=NewDataset(content, name, "csv", data.columns, len(data.frame)),
        predict_rows=data.design.rows_used,
    )

"""The dashboard's own reads: a filtered page of jobs and its count (on the indexed columns,
a page at a time), a job's metric names, and which elements of which sites to chart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, or_, select

from db.models import Job, Metric

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from kiln.records import SiteStats

MAX_TEXT = 64
HISTOGRAMS = 8  # site elements charted on a job's page at most


@dataclass(frozen=True, slots=True)
class JobFilters:
    """The jobs page's filters; empty ones do not filter."""

    status: str | None = None
    kind: str | None = None
    model: str | None = None
    owner: str | None = None
    text: str | None = None

    def conditions(self, visible_to: str | None) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        for column, value in ((Job.status, self.status), (Job.kind, self.kind),
                              (Job.model, self.model), (Job.owner, self.owner)):  # fmt: skip
            if value:
                where.append(column == value)
        if visible_to is not None:
            where.append(Job.owner == visible_to)
        if self.text:
            text = self.text[:MAX_TEXT]
            where.append(
                or_(Job.id.startswith(text, autoescape=True),
                    Job.sweep_id.startswith(text, autoescape=True),
                    Job.model.contains(text, autoescape=True),
                    Job.owner.contains(text, autoescape=True))
            )  # fmt: skip
        return where

    def query(self) -> dict[str, str]:
        """The filters that are set, as query parameters (for the pager's links)."""
        names = ("status", "kind", "model", "owner", "text")
        return {name: value for name in names if (value := getattr(self, name))}

    @property
    def listable(self) -> bool:
        """Whether GET /jobs takes these filters as they are (it has no text search)."""
        return not self.text


def job_page(session: Session, filters: JobFilters, visible_to: str | None, limit: int,
             offset: int) -> tuple[Sequence[Job], int]:  # fmt: skip
    """The newest `limit` jobs after `offset` that pass the filters (of `visible_to` only, when
    given) and how many pass in all. Ordered as GET /jobs orders them."""
    where = filters.conditions(visible_to)
    total = int(session.scalar(select(func.count()).select_from(Job).where(*where)) or 0)
    query = (select(Job).where(*where).order_by(Job.created_at.desc(), Job.id)
             .limit(limit).offset(offset))  # fmt: skip
    return session.scalars(query).all(), total


def metric_names(session: Session, job_id: str) -> list[str]:
    """The names of the metrics a job stored (train_elbo, test_accuracy...)."""
    query = select(Metric.name).where(Metric.job_id == job_id).distinct().order_by(Metric.name)
    return [str(name) for name in session.scalars(query)]


def site_elements(sites: Sequence[SiteStats], limit: int = HISTOGRAMS) -> list[dict[str, Any]]:
    """The site elements a job's page charts: every scalar site, then the first elements of
    the others, `limit` in all. Each: site, flat index, label (`theta[3]`)."""
    import numpy as np

    chosen: list[dict[str, Any]] = []
    for scalar_first in (True, False):
        for s in sites:
            if (s.shape == ()) != scalar_first:
                continue
            size = int(np.prod(s.shape)) if s.shape else 1
            for index in range(min(size, 1 if scalar_first else 2)):
                if len(chosen) >= limit:
                    return chosen
                chosen.append({"site": s.site, "index": index, "label": element_label(
                    s.site, s.shape, index)})  # fmt: skip
    return chosen


def element_label(site: str, shape: Sequence[int], index: int) -> str:
    """`theta[3]`, `w[1,2]` (the flat index in the site's shape), or `sigma` for a scalar."""
    import numpy as np

    if not shape:
        return site
    where = np.unravel_index(index, tuple(shape))
    return f"{site}[{','.join(str(int(i)) for i in where)}]"


def posterior_rows(sites: Sequence[SiteStats], diagnostics: dict[str, Any],
                   per_site: int = 10) -> list[dict[str, Any]]:  # fmt: skip
    """The posterior table: a row per element (the first `per_site` of a site), with r_hat
    and ESS when an MCMC fit stored them; a row saying how many more a site has."""
    import numpy as np

    rows: list[dict[str, Any]] = []
    for s in sites:
        size = int(np.prod(s.shape)) if s.shape else 1
        stats = [np.asarray(getattr(s, k), dtype=float).reshape(-1)
                 for k in ("mean", "sd", "q05", "q50", "q95")]  # fmt: skip
        diag = diagnostics.get(s.site)
        flat = None if diag is None else np.asarray(diag, dtype=float).reshape(3, -1)
        for i in range(min(size, per_site)):
            row = {"label": element_label(s.site, s.shape, i),
                   **{k: float(v[i]) for k, v in zip(("mean", "sd", "q05", "q50", "q95"), stats,
                                                     strict=True)}}  # fmt: skip
            if flat is not None:
                row.update(r_hat=float(flat[0, i]), ess_bulk=float(flat[1, i]),
                           ess_tail=float(flat[2, i]))  # fmt: skip
            rows.append(row)
        if size > per_site:
            rows.append({"label": f"{s.site}: {size - per_site:,} more elements", "more": True})
    return rows

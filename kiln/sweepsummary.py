"""A sweep's members grouped by some of their settings (`jobs sweep show --by lr,guide`): per
group, how many members and how many succeeded, and the mean and sd across the succeeded
members of the final loss and of each site's posterior mean.

One computation for the CLI, the Client's DataFrame and GET /sweeps/{id}/summary, so all three
agree. Sites are the scalar sites a member stores a posterior mean for (db.sweeps.MemberRow:
every site of a linreg member is a scalar); a site with no scalar mean is not summarised.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.errors import SpecError
from kiln.specerrors import did_you_mean

if TYPE_CHECKING:
    from db.sweeps import MemberRow, SweepView

MAX_BY = 16  # grouping keys at most; a sweep has far fewer settings than this
STAT_COLUMNS = ("mean", "sd")


@dataclass(frozen=True, slots=True)
class SweepGroups:
    """The summary as a table: `columns` names each value of every row of `rows`."""

    sweep_id: str
    by: list[str]
    sites: list[str]
    columns: list[str]
    rows: list[list[Any]]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (`--json`, the API): the rows as objects keyed by column."""
        groups = [dict(zip(self.columns, row, strict=True)) for row in self.rows]
        return {"id": self.sweep_id, "by": self.by, "sites": self.sites, "groups": groups}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> SweepGroups:
        """The summary back from its JSON document (what the RemoteClient reads)."""
        by, sites = [str(k) for k in doc["by"]], [str(s) for s in doc["sites"]]
        columns = summary_columns(by, sites)
        rows = [[group.get(c) for c in columns] for group in doc["groups"]]
        return cls(sweep_id=str(doc["id"]), by=by, sites=sites, columns=columns, rows=rows)


def parse_by(text: str) -> list[str]:
    """`lr,guide` -> ["lr", "guide"]; refuses an empty key, a repeated one, or too many."""
    keys = [k.strip() for k in text.split(",")]
    if not text.strip() or any(not k for k in keys):
        raise SpecError(f"--by {text[:100]!r}: write KEY,KEY,... (e.g. lr,guide)", "by")
    return keys


def check_by(by: Sequence[str], known: Sequence[str]) -> None:
    """Refuse grouping keys that are not settings of the sweep's members (naming the close
    ones), repeated keys, and more than MAX_BY keys."""
    if len(by) > MAX_BY:
        raise SpecError(f"--by names {len(by)} keys; at most {MAX_BY}", "by")
    seen: set[str] = set()
    for key in by:
        if key in seen:
            raise SpecError(f"--by names `{key[:100]}` twice", "by")
        seen.add(key)
        if key not in known:
            have = ", ".join(known) if known else "none yet: no member has settings"
            raise SpecError(f"--by `{key[:100]}`: not a setting of this sweep's members"
                            f"{did_you_mean(key, known)} (have: {have})", "by")  # fmt: skip


def summary_columns(by: Sequence[str], sites: Sequence[str]) -> list[str]:
    """The grouping keys, members, succeeded, then `final_loss.mean`, `final_loss.sd` and
    `SITE.mean`, `SITE.sd` for each site."""
    measured = ["final_loss", *sites]
    return [*by, "members", "succeeded", *(f"{m}.{s}" for m in measured for s in STAT_COLUMNS)]


def summarise_sweep(view: SweepView, by: Sequence[str]) -> SweepGroups:
    """Group the sweep's members by the settings `by` (in order of first appearance) and
    summarise each group. The sd is the sample sd (n - 1), None for fewer than 2 values, as
    on the dashboard's sweep page; the mean is None when no member of the group succeeded.

    Raises SpecError for an unknown, repeated or empty key (see check_by).
    """
    known: list[str] = []
    sites: list[str] = []
    for m in view.members:
        known += [k for k in m.settings if k not in known]
        sites += [s for s in m.params if s not in sites]
    check_by(by, known)
    groups: dict[str, tuple[list[Any], list[MemberRow]]] = {}
    for m in view.members:
        values = [m.settings.get(k) for k in by]
        key = json.dumps(values, sort_keys=True, default=str)  # settings may be lists
        groups.setdefault(key, (values, []))[1].append(m)
    rows = []
    for values, members in groups.values():
        done = [m for m in members if m.status == "succeeded"]
        row: list[Any] = [*values, len(members), len(done)]
        row += _mean_sd([m.final_loss for m in done])
        for site in sites:
            row += _mean_sd([m.params.get(site) for m in done])
        rows.append(row)
    return SweepGroups(sweep_id=view.id, by=list(by), sites=sites,
                       columns=summary_columns(by, sites), rows=rows)  # fmt: skip


def _mean_sd(values: Sequence[float | None]) -> list[float | None]:
    """[mean, sd] of the finite values (sd with n - 1), None where there are too few."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return [None, None]
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return [mean, None]
    return [mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))]

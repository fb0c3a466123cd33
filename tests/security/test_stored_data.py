"""Stored bytes a worker reads: a library job's packed images (an .npz) and what a job row holds
(its spec, its data set). Whoever can write the database cannot make a worker unpack a bomb,
unpickle an object array or take a non-finite number: each is refused with a message (the job
fails, once, as a user error), and no code runs."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from db.models import Dataset, Job
from kiln.errors import DataError
from kiln.library import DataRef
from kiln.library.digits import load_images
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, offline_client, run_in_process
from tests.params import EMBEDDED_AND_FLEET


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def images(n: int = 6, **changes: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {
        "x_train": np.zeros((n, 8, 8), np.uint8),
        "y_train": np.arange(n, dtype=np.uint8) % 10,
        "x_test": np.zeros((2, 8, 8), np.uint8),
        "y_test": np.zeros(2, np.uint8),
    }
    return {**arrays, **changes}


def claimed_size(content: bytes, size: int) -> bytes:
    """The .npz with its first member's size in the zip directory changed to `size`."""
    at = content.rindex(b"PK\x01\x02")  # the last member's entry in the central directory
    first = content.index(b"PK\x01\x02")
    at = min(at, first)
    return content[: at + 24] + struct.pack("<I", size) + content[at + 28 :]


class Payload:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def pickled_npz(marker: Path) -> bytes:
    arrays: dict[str, np.ndarray] = dict(images())
    arrays["x_train"] = np.array([Payload(marker)], dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def lying_member(content: bytes) -> bytes:
    """A member whose stored size says 10 bytes: a reader stops there and the CRC fails."""
    return claimed_size(content, 10)


def test_a_stored_image_set_that_unpacks_past_the_cap_is_refused_unread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kiln.library.digits

    monkeypatch.setattr(kiln.library.digits, "WORKER_MAX_IMAGE_BYTES", 100_000)
    bomb = npz(**images(n=2_000))  # 128 KB of zeros that pack to a few hundred bytes
    assert len(bomb) < 10_000
    with pytest.raises(DataError, match="bytes unpacked; at most 100000"):
        load_images(DataRef("npz", "planted", bomb), seed=0)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        pytest.param(claimed_size(npz(**images()), 2**32 - 1), "bytes unpacked; at most",
                     id="directory-claims-4-gb"),
        pytest.param(lying_member(npz(**images())), "not an .npz of MNIST arrays",
                     id="member-lies-about-its-size"),
        pytest.param(b"PK\x05\x06" + bytes(18), "no array `x_train`", id="empty-zip"),
        pytest.param(b"not a zip at all", "not an .npz of MNIST arrays", id="not-a-zip"),
        pytest.param(npz(x_train=np.zeros((2, 8, 8), np.uint8)), "no array `y_train`",
                     id="arrays-missing"),
        pytest.param(npz(**images(y_train=np.full(6, 200, np.uint8))), "classes 0..9",
                     id="labels-past-9"),
        pytest.param(npz(**images(x_train=np.full((6, 8, 8), 7.5))), "must be uint8",
                     id="pixels-past-1"),
        pytest.param(npz(**images(x_train=np.zeros((6, 2, 2, 2), np.uint8))), "has shape",
                     id="four-dimensions"),
        pytest.param(npz(**images(x_train=np.zeros((0, 8, 8), np.uint8),
                                  y_train=np.zeros(0, np.uint8))), "at least one image",
                     id="no-images"),
    ],
)  # fmt: skip
def test_crafted_stored_images_are_refused(content: bytes, named: str) -> None:
    with pytest.raises(DataError, match=named):
        load_images(DataRef("npz", "planted", content), seed=0)


def test_an_object_array_planted_in_stored_images_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(DataError, match="not an .npz of MNIST arrays"):
        load_images(DataRef("npz", "planted", pickled_npz(marker)), seed=0)
    assert not marker.exists()


@EMBEDDED_AND_FLEET
@pytest.mark.parametrize(
    ("plant", "named"),
    [
        # PostgreSQL's JSON holds no Infinity: the text "inf" is what can be planted there
        ({"spec": {"lr": "inf"}}, "spec.lr: must be a finite number"),
        ({"spec": {"priors": {"rugged": {"dist": "normal", "loc": 0, "scale": -1}}}},
         "spec.priors.rugged.scale: must be > 0"),
        ({"spec": {"formula": "rgdppc_2000 ~ I(9 ** 9 ** 9 ** 9)"}}, "not chained"),
        ({"data": b"rgdppc_2000," + b"r" * 100_000 + b"\n1,2\n"}, "a column name is 100000"),
    ],
    ids=["lr-inf", "prior-scale-negative", "power-tower", "100k-character-column"],
)  # fmt: skip
def test_a_job_row_planted_with_hostile_values_fails_once_with_a_message(
    stack: Stack, plant: dict[str, object], named: str
) -> None:
    """Someone who can write the database edits a queued job: the worker parses the spec and
    reads the data through the same checks, fails the job (a user error, not retried)."""
    kiln = offline_client(stack)
    job_id = kiln.submit_fit(RUGGED, RUGGED_FORMULA, steps=5, num_samples=10, seed=1)
    with stack.sessions()() as session:
        job = session.get(Job, job_id)
        assert job is not None
        if "spec" in plant:
            spec = {**job.spec, **plant["spec"]}  # type: ignore[dict-item]
            session.execute(update(Job).where(Job.id == job_id).values(spec=spec))
        else:
            session.execute(update(Dataset).where(Dataset.id == job.dataset_id).values(
                content=plant["data"]))  # fmt: skip
        session.commit()
    assert run_in_process(stack, job_id) == "failed"
    job_view = kiln.job(job_id)
    assert named in (job_view["error"] or ""), job_view["error"]
    assert job_view["attempts"] == 1

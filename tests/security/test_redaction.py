"""What a job stores is redacted: a model's error that quotes a URL with its password (the
worker's database URL, say) is stored and shown with `***` in its place."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Stack, offline_client, run_in_process
from tests.params import EMBEDDED_AND_FLEET

pytestmark = EMBEDDED_AND_FLEET  # the embedded defaults and a fleet (PostgreSQL + Redis)

SECRET = "s3cretpw"
LEAKY = f"""
import pyro
import pyro.distributions as dist


def model(x):
    pyro.sample("mu", dist.Normal(0.0, 1.0))
    raise RuntimeError("cannot reach postgresql://kiln:{SECRET}@db.internal:5432/kiln")
"""


def test_a_model_error_quoting_a_password_is_stored_redacted(stack: Stack, tmp_path: Path) -> None:
    model = tmp_path / "leaky.py"
    model.write_text(LEAKY)
    kiln = offline_client(stack)
    job_id = kiln.submit_model(model, {"x": [1.0, 2.0]}, steps=5, seed=1)
    status = run_in_process(stack, job_id)
    job = kiln.job(job_id)
    assert status == "failed"
    assert "postgresql://kiln:***@db.internal:5432/kiln" in job["error"]
    assert SECRET not in str(job)

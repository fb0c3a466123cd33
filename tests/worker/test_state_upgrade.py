"""`jobs db upgrade` rewrites fitted states an older Kiln pickled (torch.save) into the
pickle-free format: the same parameters bitwise, a predict job from the fit still works, and a
planted pickle is left unread (named, nothing run)."""

from __future__ import annotations

import io
from pathlib import Path

import pyro
import torch
from sqlalchemy import update

from db.models import FittedState
from inference.state import LEGACY_STATE_FORMAT, STATE_FORMAT, read_state
from tests.conftest import RUGGED, RUGGED_FORMULA, Stack, offline_client, run_cli, run_in_process
from tests.params import EMBEDDED_AND_FLEET
from tests.security.test_stored_state import planted


def legacy_bytes(state: dict[str, object]) -> bytes:
    """What Kiln before the codec stored: torch.save of the format and the param store."""
    buffer = io.BytesIO()
    torch.save({"format": LEGACY_STATE_FORMAT, "param_store": state}, buffer)
    return buffer.getvalue()


@EMBEDDED_AND_FLEET
def test_db_upgrade_rewrites_legacy_states_and_refuses_a_planted_pickle(
    stack: Stack, tmp_path: Path
) -> None:
    kiln = offline_client(stack)
    fits = [kiln.submit_fit(RUGGED, RUGGED_FORMULA, steps=20, num_samples=20, seed=s)
            for s in (1, 2)]  # fmt: skip
    for fit in fits:
        assert run_in_process(stack, fit) == "succeeded", kiln.job(fit)["error"]
    with stack.sessions()() as session:
        good = session.get(FittedState, fits[0])
        assert good is not None
        before = read_state(bytes(good.content))
        marker = tmp_path / "pwned"
        session.execute(update(FittedState).where(FittedState.job_id == fits[0]).values(
            content=legacy_bytes(before), format=LEGACY_STATE_FORMAT))  # fmt: skip
        session.execute(update(FittedState).where(FittedState.job_id == fits[1]).values(
            content=planted(marker, LEGACY_STATE_FORMAT), format=LEGACY_STATE_FORMAT))  # fmt: skip
        session.commit()

    done = run_cli("db", "upgrade", env=stack.env)
    assert done.returncode == 0, done.stderr
    assert "rewrote 1 pickled fitted state(s)" in done.stdout + done.stderr
    assert f"could not be read and stay as they were (fits {fits[1]})" in done.stdout + done.stderr
    assert not marker.exists()

    with stack.sessions()() as session:
        rewritten = session.get(FittedState, fits[0])
        assert rewritten is not None and rewritten.format == STATE_FORMAT
        after = read_state(bytes(rewritten.content))
    for name, value in before["params"].items():
        assert torch.equal(after["params"][name], value), name
    pyro.clear_param_store()
    predict = kiln.predict(fits[0], num_samples=30, seed=3)
    assert run_in_process(stack, predict) == "succeeded", kiln.job(predict)["error"]

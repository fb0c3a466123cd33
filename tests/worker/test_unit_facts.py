"""What a unit's sandbox says of how its sampler's step ran is kept only where well formed:
a hostile sandbox cannot put an arbitrary compiler name or an unbounded number in the record."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.jobinfo import McmcInfo
from kiln.specs import UserMcmcFitSpec
from worker.runners.chain import _facts

JOB = UserMcmcFitSpec(model="m.py:model", model_file="m.py")


def kept(step: Any) -> Any:
    info = McmcInfo()
    _facts(info, {"engine": "kiln", "step": step}, JOB)
    return info.step


def test_a_well_formed_step_is_kept() -> None:
    step = {"compiler": "inductor", "inductor_from": 50, "leapfrog_steps": 123_456}
    assert kept(step) == step


@pytest.mark.parametrize(
    ("sent", "want"),
    [
        ({"compiler": "inductor", "inductor_from": -1, "leapfrog_steps": 10**30},
         {"compiler": "inductor", "inductor_from": None, "leapfrog_steps": None}),
        ({"compiler": "torch.jit", "inductor_from": True, "leapfrog_steps": 1.5},
         {"compiler": "torch.jit", "inductor_from": None, "leapfrog_steps": None}),
        ({"compiler": "rm -rf /", "leapfrog_steps": 3}, None),
        (["inductor"], None),
    ],
)  # fmt: skip
def test_a_malformed_step_is_cleaned_or_dropped(sent: Any, want: Any) -> None:
    assert kept(sent) == want

"""fit_many() on a CUDA device: the same fits as on the CPU, a diverging member failing alone,
and a member's fitted state loadable on the CPU. Skipped where torch sees no GPU."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch

from inference.state import load_state
from inference.vectorized import fit_many
from kiln.tables import build_design, read_csv_bytes
from tests.conftest import RUGGED, RUGGED_FORMULA

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_a_batch_on_the_gpu_fits_what_the_cpu_fits() -> None:
    design = build_design(read_csv_bytes(RUGGED.read_bytes(), "rugged.csv"), RUGGED_FORMULA)
    rows, members = len(design.y), 16
    counts = np.random.default_rng(0).multinomial(rows, np.full(rows, 1 / rows), size=members)
    lr = [0.005] * (members - 1) + [1e3]  # the last member diverges
    runs = {
        device: fit_many(design.X, design.y, terms=design.terms, members=members, weights=counts,
                         seeds=list(range(members)), steps=1000, lr=lr, device=device)
        for device in ("cpu", "cuda")
    }  # fmt: skip
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert [m.status for m in gpu.members] == ["ok"] * (members - 1) + ["failed"]
    reason = gpu.members[-1].reason
    assert reason is not None and reason.startswith(f"member {members - 1}:")
    for k in range(members - 1):
        for site in cpu.sites:
            ours, theirs = gpu.members[k].params[site]["mean"], cpu.members[k].params[site]["mean"]
            assert abs(ours - theirs) < 0.05, (k, site, ours, theirs)
    state = gpu.members[0].state
    assert state is not None
    load_state(state, map_location="cpu")  # as a predict job on a CPU worker
    store = pyro.get_param_store()
    assert sorted(store.keys()) == sorted(gpu.members[0].guide_params)
    assert all(store[n].device.type == "cpu" and store[n].dim() == 0 for n in store.keys())

"""The wheel as a product: `make wheel`, installed in a fresh virtual environment outside the
checkout, runs `kiln models`, `kiln demo` (on its shipped rugged data) and `kiln worker --help`.

The fresh environment reaches the dependencies already installed in .venv through a .pth line
(no package index here); a .pth line adds a path but runs none of that folder's own .pth
files, so the checkout's editable install cannot leak in, and the test proves it: `kiln` and
its data resolve inside the fresh environment.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_wheel_installed_in_a_fresh_venv_runs_models_demo_and_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.pop("PYTHONPATH", None)
    run(["make", "wheel", f"PY={sys.executable}", "STAMP="], ROOT, env)
    (wheel,) = sorted((ROOT / "dist").glob("kiln-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    paths = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(run([str(python), "-c", paths], tmp_path, env).strip())
    (purelib / "kiln-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)], tmp_path, env)  # fmt: skip

    where = tmp_path / "elsewhere"  # no ../shared/data beside it
    where.mkdir()
    user = {**env, "HOME": str(tmp_path / "home"), "PATH": f"{venv / 'bin'}:{env['PATH']}"}
    found = run([str(python), "-c", "import kiln, kiln.packaged_data as p;"
                 " print(kiln.__file__); print(p.data_file('rugged_data.csv'))"],
                where, user).split()  # fmt: skip
    assert all(Path(f).is_relative_to(venv) for f in found), found  # not the checkout's
    assert (Path(found[1]).parent / "NOTICE").read_text().count("sha256") == 3

    kiln = str(venv / "bin" / "kiln")
    models = run([kiln, "models"], where, user)
    assert "linreg" in models and "bnn-classifier" in models
    assert "--queues" in run([kiln, "worker", "--help"], where, user)
    from worker.embedded import stop_embedded_broker

    try:
        demo = run([kiln, "demo", "--steps", "200", "-o", str(where / "demo.png")], where, user,
                   timeout=900)  # fmt: skip
    finally:
        stop_embedded_broker(tmp_path / "home" / ".kiln")
    assert "fit " in demo and (where / "demo.png").stat().st_size > 10_000

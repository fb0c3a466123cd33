"""docker-compose.yml cannot run here (no engine): parse it and check every command it runs."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = [name for name, s in SERVICES.items() if "build" in s]


def test_compose_has_the_whole_stack() -> None:
    assert {"redis", "postgres", "migrate", "worker-cpu", "worker-gpu", "flower"} <= set(SERVICES)


def test_gpu_worker_reserves_an_nvidia_device() -> None:
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert SERVICES["worker-gpu"]["command"][:3] == ["worker", "--queues", "gpu"]


def test_no_default_passwords_in_compose_or_env_example() -> None:
    lines = (ROOT / "docker-compose.yml").read_text().splitlines()
    for line in [ln for ln in lines if "PASSWORD" in ln and not ln.lstrip().startswith("#")]:
        assert "${POSTGRES_PASSWORD:?" in line, line
    assert re.search(r"^POSTGRES_PASSWORD=\s*$", (ROOT / ".env.example").read_text(), re.M)


def test_every_jobs_command_in_compose_exists() -> None:
    for name in OURS:
        service = SERVICES[name]
        if "entrypoint" in service:
            continue
        argv = [*service["command"], "--help"]
        done = subprocess.run([sys.executable, "-m", "kiln.cli", *argv],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, (name, done.stderr)


def test_flower_entrypoint_names_an_app_that_imports(monkeypatch, tmp_path) -> None:
    entry = SERVICES["flower"]["entrypoint"]
    assert entry[:3] == ["celery", "--app", "worker.app:app"]
    assert (Path(sys.executable).parent / "celery").exists()
    monkeypatch.setenv("KILN_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("KILN_HOME", str(tmp_path))
    module = importlib.import_module("worker.app")
    monkeypatch.delattr(module, "app", raising=False)
    assert module.app.conf.accept_content == ["json"]


def test_dockerfile_installs_pinned_torch_before_the_project() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'TORCH_SPEC="torch==2.13.0"' in text
    assert text.index('pip install "${TORCH_SPEC}"') < text.index("pip install . flower")

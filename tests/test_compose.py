"""docker-compose.yml cannot run here (no Docker engine): parse it, run what each service runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)["services"]
OURS = sorted(name for name, service in SERVICES.items() if "build" in service)
# `${VAR:?message}`: compose refuses to start while VAR is unset or empty.
REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}")
DEFAULTED_VAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}")  # compose: the default
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN", re.I)
URL_PASSWORD = re.compile(r"^[a-z][\w+.-]*://[^:/@]*:(.+)@[^@]*$")  # greedy: up to the last @


def words(value: str | list[str] | None) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value or [])


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def container_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: an entrypoint set in compose also drops the image's CMD."""
    if "entrypoint" in service:
        return words(service["entrypoint"]) + words(service.get("command"))
    found = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", DOCKERFILE, re.M)
    assert found, "the Dockerfile has no exec-form ENTRYPOINT"
    return cast(list[str], json.loads(found.group(1))) + words(service.get("command"))


def test_compose_has_the_whole_stack() -> None:
    assert {"redis", "postgres", "migrate", "worker-cpu", "worker-gpu", "scheduler",
            "flower"} <= set(SERVICES)  # fmt: skip
    assert OURS == ["flower", "migrate", "scheduler", "worker-cpu", "worker-gpu"]


def test_gpu_worker_reserves_an_nvidia_device() -> None:
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices


def test_workers_start_after_migrations_and_a_healthy_redis() -> None:
    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert SERVICES["migrate"]["restart"] == "no"
    for name in ["worker-cpu", "worker-gpu", "scheduler"]:
        assert SERVICES[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }, name


def test_every_kiln_service_gets_the_postgres_and_redis_urls() -> None:
    for name in OURS:
        env = environment(SERVICES[name])
        assert re.fullmatch(r"postgresql://kiln:.+@postgres:5432/kiln", env["KILN_DATABASE_URL"])
        assert env["KILN_BROKER_URL"] == "redis://redis:6379/0", name


def test_no_service_environment_holds_a_literal_password() -> None:
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            secrets = [value] if SECRET_NAME.search(key) else []
            if in_url := URL_PASSWORD.match(value):
                secrets.append(in_url[1])
            for secret in secrets:
                assert REQUIRED_VAR.fullmatch(secret), f"{name}: {key} has a literal secret"


def test_every_required_variable_is_in_env_example_with_no_value() -> None:
    required = set(REQUIRED_VAR.findall(COMPOSE_TEXT))
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert required, "expected at least POSTGRES_PASSWORD as ${POSTGRES_PASSWORD:?...}"
    for var in required:
        assert example.get(var) == "", f"{var}: name it in .env.example, with an empty value"


@pytest.mark.parametrize("name", OURS)
def test_each_kiln_service_runs_a_command_that_exists(name: str, tmp_path: Path) -> None:
    service = SERVICES[name]
    argv = container_argv(service)
    # The service's own environment, with a stand-in for each required variable.
    env = {
        k: DEFAULTED_VAR.sub(r"\1", REQUIRED_VAR.sub("stand-in", v))
        for k, v in environment(service).items()
    }
    env = {**os.environ, **env, "KILN_HOME": str(tmp_path)}
    if argv[0] == "jobs":
        # `--help` after the real arguments: click still rejects an unknown command or option.
        cmd = [sys.executable, "-m", "kiln.cli", *argv[1:], "--help"]
    elif argv[0] == "celery":
        celery = Path(sys.executable).parent / "celery"
        assert celery.exists(), f"no celery console script next to {sys.executable}"
        app = argv[argv.index("--app") + 1]
        if "flower" in argv:
            assert re.search(r"pip install .*flower", DOCKERFILE), "the image must install flower"
        # `report` imports the app (e.g. worker.app:app) and connects to nothing.
        cmd = [str(celery), "--app", app, "report"]
    else:
        pytest.fail(f"{name}: runs {argv[0]!r}, which is neither `jobs` nor `celery`")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (name, argv, done.stderr[-2000:])


def test_dockerfile_installs_pinned_torch_before_the_project() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(dep for dep in deps if dep.startswith("torch=="))
    assert pin == "torch==2.13.0"
    lines = DOCKERFILE.splitlines()
    torch_at = next(i for i, ln in enumerate(lines) if "pip install" in ln and pin in ln)
    project_at = next(i for i, ln in enumerate(lines) if re.search(r"pip install \.(\s|$)", ln))
    assert torch_at < project_at


def test_dockerfile_runs_jobs_as_a_non_root_user() -> None:
    assert re.search(r"^FROM python:3\.11-slim\s*$", DOCKERFILE, re.M)
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert container_argv({"command": []}) == ["jobs"]

"""docker-compose.yml cannot run here (no Docker engine): parse it, run what each service runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping
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
ANY_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(\}|[:?+-][^}]*\})?")  # $VAR or ${VAR...}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH", re.I)
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


def runs(name: str) -> str | None:
    """The `jobs` command a service runs (worker, scheduler, db...), or None."""
    argv = container_argv(SERVICES[name])
    return argv[1] if argv[0] == "jobs" and len(argv) > 1 else None


def required(var: str) -> re.Pattern[str]:
    """`${VAR:?message}` for this VAR, the whole value."""
    return re.compile(r"\$\{" + var + r":\?[^}]*\}")


def unknown_kiln_variables(names: Iterable[str]) -> list[str]:
    """The KILN_* names that Kiln does not read. Settings ignores unknown variables
    (extra="ignore"), so a misspelt one would change nothing, silently."""
    from kiln.settings import CONFIG_ENV, Settings

    known = {f"KILN_{field.upper()}" for field in Settings.model_fields} | {CONFIG_ENV}
    return sorted(name for name in names if name.startswith("KILN_") and name not in known)


def run_jobs_help(args: list[str], env: Mapping[str, str], home: Path) -> None:
    """`jobs ARGS --help` with this environment (over ours) and KILN_HOME=home: passes when
    the subcommand and every option in ARGS exist. `--help` after the real arguments: click
    still rejects an unknown command or option, and nothing connects anywhere."""
    cmd = [sys.executable, "-m", "kiln.cli", *args, "--help"]
    env = {**os.environ, **env, "KILN_HOME": str(home)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (["jobs", *args], done.stderr[-2000:])


WORKERS = [name for name in OURS if runs(name) == "worker"]
FLEET = [name for name in OURS if runs(name) in {"worker", "scheduler", "server"}]  # both URLs
BROKER_URL = re.compile(r"redis://:" + required("REDIS_PASSWORD").pattern + r"@redis:6379/0")


def test_compose_has_the_whole_stack() -> None:
    assert {"redis", "postgres", "migrate", "server", "worker-cpu", "worker-gpu", "scheduler",
            "flower"} <= set(SERVICES)  # fmt: skip
    assert OURS == ["flower", "migrate", "scheduler", "server", "worker-cpu", "worker-gpu"]


def test_gpu_worker_reserves_an_nvidia_device() -> None:
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices


def test_workers_start_after_migrations_and_a_healthy_redis() -> None:
    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert SERVICES["migrate"]["restart"] == "no"
    for name in ["server", "worker-cpu", "worker-gpu", "scheduler"]:
        assert SERVICES[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }, name


def test_each_kiln_service_gets_only_the_urls_it_needs() -> None:
    """Whoever holds the database or the broker URL has everything: the server, workers and the
    scheduler get both, the migration only the database, Flower only the broker."""
    assert WORKERS == ["worker-cpu", "worker-gpu"]
    assert FLEET == ["scheduler", "server", "worker-cpu", "worker-gpu"]
    needs = {name: {"KILN_DATABASE_URL", "KILN_BROKER_URL"} for name in FLEET}
    needs |= {"migrate": {"KILN_DATABASE_URL"}, "flower": {"KILN_BROKER_URL"}}
    assert sorted(needs) == OURS
    for name, service in SERVICES.items():
        env = environment(service)
        assert {k for k in env if k.endswith("_URL")} == needs.get(name, set()), name
        if "KILN_DATABASE_URL" in env:
            db_url = r"postgresql://kiln:.+@postgres:5432/kiln"
            assert re.fullmatch(db_url, env["KILN_DATABASE_URL"]), name
        if "KILN_BROKER_URL" in env:
            assert BROKER_URL.fullmatch(env["KILN_BROKER_URL"]), (name, env["KILN_BROKER_URL"])


def test_redis_requires_the_password_and_its_healthcheck_gives_it() -> None:
    redis = SERVICES["redis"]
    argv = words(redis["command"])
    assert argv[0] == "redis-server"
    assert required("REDIS_PASSWORD").fullmatch(argv[argv.index("--requirepass") + 1])
    # redis-cli takes the password from REDISCLI_AUTH, so it is not on a command line.
    assert required("REDIS_PASSWORD").fullmatch(environment(redis)["REDISCLI_AUTH"])
    check = " ".join(words(redis["healthcheck"]["test"]))
    assert "redis-cli" in check and "PASSWORD" not in check and " -a " not in check
    assert "PONG" in check  # redis-cli exits 0 on a NOAUTH reply: look for the answer


def test_flower_asks_for_a_login_and_listens_on_loopback_only() -> None:
    flower = SERVICES["flower"]
    # Flower reads --basic-auth from FLOWER_BASIC_AUTH (its FLOWER_* variables).
    assert required("FLOWER_BASIC_AUTH").fullmatch(environment(flower)["FLOWER_BASIC_AUTH"])
    assert not any(arg.startswith("--basic") for arg in container_argv(flower))
    assert flower["ports"] and all(p.startswith("127.0.0.1:") for p in flower["ports"])


def test_the_server_listens_in_its_container_and_is_published_on_loopback_only() -> None:
    """0.0.0.0 inside the container, for the published port; on the host, loopback only: every
    request carries a token, so it is reached from elsewhere only through a TLS proxy."""
    argv = container_argv(SERVICES["server"])
    assert argv[:2] == ["jobs", "server"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    port = argv[argv.index("--port") + 1]
    assert SERVICES["server"]["ports"] == [f"127.0.0.1:{port}:{port}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_server_healthcheck_passes_against_jobs_server_and_fails_without_it(
    tmp_path: Path,
) -> None:
    """The healthcheck runs as written (on a free port instead of the server's), against a
    real `jobs server`: failing while nothing listens, passing once /health answers."""
    server = SERVICES["server"]
    test = server["healthcheck"]["test"]
    # The image is python:3.11-slim with no curl or wget: python asks.
    assert test[:3] == ["CMD", "python", "-c"], test
    assert not re.search(r"\b(curl|wget)\b", DOCKERFILE)
    argv = container_argv(server)
    port = argv[argv.index("--port") + 1]
    assert f"'http://127.0.0.1:{port}/health'" in test[3], test[3]
    free = _free_port()
    check = [sys.executable, "-c", test[3].replace(f":{port}/", f":{free}/")]

    def healthy() -> bool:
        return subprocess.run(check, capture_output=True, timeout=30).returncode == 0

    assert not healthy(), "the healthcheck passed with no server listening"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(tmp_path)  # the embedded SQLite database; /health asks nothing
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "kiln.cli", "server", "--host", "127.0.0.1", "--port", str(free)]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while not healthy():
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "jobs server did not answer /health in 60 s"
            time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_every_kiln_variable_is_one_kiln_reads() -> None:
    names = {key for service in SERVICES.values() for key in environment(service)}
    example = (ROOT / ".env.example").read_text().splitlines()
    names |= {line.lstrip("# ").partition("=")[0] for line in example if "=" in line}
    assert {"KILN_DATABASE_URL", "KILN_ALLOW_USER_CODE", "KILN_SANDBOX_NETWORK"} <= names
    assert unknown_kiln_variables(names) == []


def _limit(value: object) -> str:
    """A limit as compose sees it with nothing set in .env: `${VAR:-default}` -> default."""
    return DEFAULTED_VAR.sub(r"\1", str(value))


@pytest.mark.parametrize("name", FLEET)
def test_the_server_workers_and_scheduler_have_memory_cpu_and_pids_limits(name: str) -> None:
    service = SERVICES[name]
    # One place for limits: the spec's deploy.resources.limits (mem_limit, cpus and
    # pids_limit are its deprecated spellings, and compose refuses the two mixed).
    assert not {"mem_limit", "memswap_limit", "cpus", "pids_limit"} & set(service), name
    limits = service["deploy"]["resources"]["limits"]
    assert set(limits) == {"memory", "cpus", "pids"}, name
    memory = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]b?)", _limit(limits["memory"]), re.I)
    assert memory and float(memory[1]) > 0, (name, limits["memory"])
    assert 0 < float(_limit(limits["cpus"])), name
    # compose casts a variable to a number only on the paths it lists, and this is not one.
    assert isinstance(limits["pids"], int) and limits["pids"] > 0, (name, limits["pids"])


def test_workers_get_the_sandbox_settings_with_kilns_own_defaults() -> None:
    from kiln.settings import Settings

    for name in WORKERS:
        env = environment(SERVICES[name])
        assert env["KILN_ALLOW_USER_CODE"] == "${KILN_ALLOW_USER_CODE:-false}", name
        sandbox = {k: v for k, v in env.items() if k.startswith("KILN_SANDBOX_")}
        assert {"KILN_SANDBOX_MEMORY_MB", "KILN_SANDBOX_WALL_S"} <= set(sandbox), name
        for key, value in sandbox.items():
            field = Settings.model_fields[key.removeprefix("KILN_").lower()]
            assert value == f"${{{key}:-{field.default}}}", (name, key)
    for name in set(OURS) - set(WORKERS):
        assert "KILN_ALLOW_USER_CODE" not in environment(SERVICES[name]), name


def test_no_secret_has_a_default_value_anywhere() -> None:
    """Every use of a secret variable in the compose file is `${VAR:?...}` (compose refuses to
    start without it), and .env.example leaves every secret empty."""
    secrets = {m[1] for m in ANY_VAR.finditer(COMPOSE_TEXT) if SECRET_NAME.search(m[1])}
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"} <= secrets
    for found in ANY_VAR.finditer(COMPOSE_TEXT):
        if SECRET_NAME.search(found[1]):
            assert required(found[1]).fullmatch(found[0]), f"{found[0]}: give it no default"
    example = (ROOT / ".env.example").read_text().splitlines()
    for line in example:
        key, _, value = line.lstrip("# ").partition("=")
        if SECRET_NAME.search(key) and "=" in line:
            assert value == "" and not line.startswith("#"), f".env.example: {line}"


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
    if argv[0] == "jobs":
        run_jobs_help(argv[1:], env, tmp_path)
        return
    assert argv[0] == "celery", f"{name}: runs {argv[0]!r}, which is neither `jobs` nor `celery`"
    celery = Path(sys.executable).parent / "celery"
    assert celery.exists(), f"no celery console script next to {sys.executable}"
    app = argv[argv.index("--app") + 1]
    if "flower" in argv:
        assert re.search(r"pip install .*flower", DOCKERFILE), "the image must install flower"
    # `report` imports the app (e.g. worker.app:app) and connects to nothing.
    cmd = [str(celery), "--app", app, "report"]
    env = {**os.environ, **env, "KILN_HOME": str(tmp_path)}
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

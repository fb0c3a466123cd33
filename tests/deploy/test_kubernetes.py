"""deploy/kubernetes cannot be applied here (no cluster): render it, validate each document
against the Kubernetes schemas, and check it against the code, the image and docker-compose.yml."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, major_minor

from tests.deploy.manifests import (
    ALL_CONTAINERS,
    BASE,
    BY_KEY,
    COMPOSE_TWIN,
    CONTAINER_IDS,
    DOCS,
    EXAMPLE_DOCS,
    KUBERNETES,
    PLACEHOLDER,
    SECRET,
    SERVICE_OBJECTS,
    URLS,
    WORKLOADS,
    Doc,
    argv,
    containers,
    env_refs,
    key,
    load_documents,
    option,
    pod,
    quantity,
    resolved_env,
    secret_values,
)
from tests.test_compose import (
    DEFAULTED_VAR,
    DOCKERFILE,
    SERVICES,
    URL_PASSWORD,
    container_argv,
    environment,
    run_jobs_help,
    unknown_kiln_variables,
)


def test_kustomization_lists_every_manifest_in_its_folder() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    manifests = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)
    assert kustomization["namespace"] == "kiln"
    # `kubectl apply -f namespace.yaml` makes the same namespace as `apply -k`.
    assert load_documents(BASE / "namespace.yaml")[0]["metadata"]["name"] == "kiln"


def test_the_base_has_the_whole_stack() -> None:
    assert sorted(BY_KEY) == [
        "Deployment/kiln-scheduler",
        "Deployment/kiln-server",
        "Deployment/kiln-worker-cpu",
        "Deployment/kiln-worker-gpu",
        "Deployment/kiln-worker-user-code",
        "Job/kiln-migrate",
        "Namespace/kiln",
        "Secret/kiln-urls",
        "Service/kiln-scheduler",
        "Service/kiln-server",
    ]
    assert sorted(WORKLOADS) == sorted(COMPOSE_TWIN)


def test_render_matches_kubectl_kustomize() -> None:
    """render() is a subset of kustomize: where kubectl is installed, it must agree with it."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # not installed by the project: the check needs the real one
        pytest.skip("kubectl not installed: render() not compared with `kubectl kustomize`")
    done = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    theirs = [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]
    assert {key(doc): doc for doc in theirs} == BY_KEY


def test_the_pinned_kubernetes_release_has_bundled_schemas() -> None:
    assert KUBERNETES in {major_minor(v) for v in all_versions()}, (
        f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for {KUBERNETES}"
    )


@pytest.mark.parametrize("doc", DOCS + EXAMPLE_DOCS, ids=[key(d) for d in DOCS + EXAMPLE_DOCS])
def test_every_document_validates_against_the_kubernetes_schemas(doc: Doc) -> None:
    try:
        version = kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(part) for part in e.path)
        pytest.fail(f"{key(doc)}: {where}: {e.message}", pytrace=False)
    assert version == KUBERNETES


def test_every_container_runs_the_image_compose_builds() -> None:
    images = {service["image"] for service in SERVICES.values() if "build" in service}
    assert images == {"kiln:latest"}
    for name, container in ALL_CONTAINERS:
        assert container["image"] in images, name
        # IfNotPresent: a `:latest` tag would otherwise be pulled from a registry every time,
        # and an image loaded into the nodes by hand would not be used.
        assert container["imagePullPolicy"] == "IfNotPresent", name


@pytest.mark.parametrize("name", sorted(COMPOSE_TWIN))
def test_each_workload_runs_what_its_compose_service_runs(name: str) -> None:
    """The same command, and the same settings with compose's defaults, as the compose
    service it copies; only the URLs come from the Secret instead."""
    twin = SERVICES[COMPOSE_TWIN[name]]
    (container,) = containers(name)
    assert argv(container) == container_argv(twin)
    literal, from_secret = env_refs(container)
    theirs = {k: DEFAULTED_VAR.sub(r"\1", v) for k, v in environment(twin).items()}
    assert set(literal) | set(from_secret) == set(theirs)
    if name == "kiln-worker-user-code":  # the one worker that runs users' model files
        assert theirs.pop("KILN_ALLOW_USER_CODE") == "false"
        assert literal.pop("KILN_ALLOW_USER_CODE") == "true"
    assert literal == {k: v for k, v in theirs.items() if k not in from_secret}


@pytest.mark.parametrize(("name", "container"), ALL_CONTAINERS, ids=CONTAINER_IDS)
def test_each_container_runs_a_jobs_command_that_exists(
    name: str, container: Doc, tmp_path: Path
) -> None:
    words = argv(container)
    assert words[0] == "jobs", f"{name}: runs {words[0]!r}, not `jobs`"
    run_jobs_help(words[1:], resolved_env(container), tmp_path)


def test_every_kiln_variable_is_one_kiln_reads() -> None:
    for name, container in ALL_CONTAINERS:
        literal, from_secret = env_refs(container)
        assert unknown_kiln_variables([*literal, *from_secret]) == [], name
    assert unknown_kiln_variables(secret_values(SECRET)) == []


def test_each_workload_gets_only_the_urls_it_needs_and_from_the_secret() -> None:
    """Whoever holds the database or the broker URL has everything: the server, the workers and
    the scheduler get both, the migration only the database; each from the Secret."""
    needs = {name: URLS for name in WORKLOADS} | {"kiln-migrate": {"KILN_DATABASE_URL"}}
    for name, container in ALL_CONTAINERS:
        literal, from_secret = env_refs(container)
        assert {k for k in [*literal, *from_secret] if k.endswith("_URL")} == needs[name], name
        assert from_secret == {url: (SECRET, url) for url in needs[name]}, name
        for var, value in literal.items():
            assert not URL_PASSWORD.match(value), f"{name}: {var} holds a URL with a password"


def test_the_secret_holds_placeholders_not_passwords() -> None:
    secrets = [doc for doc in DOCS if doc["kind"] == "Secret"]
    assert [key(doc) for doc in secrets] == [f"Secret/{SECRET}"]
    # stringData only: base64 in `data` would hide what a reader should see.
    assert "data" not in secrets[0]
    urls = secret_values(SECRET)
    assert set(urls) == URLS
    shapes = {
        "KILN_DATABASE_URL": r"postgresql://kiln:(?P<password>[^@]+)@postgres:5432/kiln",
        "KILN_BROKER_URL": r"redis://:(?P<password>[^@]+)@redis:6379/0",
    }
    for var, url in urls.items():
        found = re.fullmatch(shapes[var], url)
        assert found, (var, url)
        assert found["password"] == PLACEHOLDER, f"{var}: a placeholder, not a password"


def test_only_the_gpu_worker_asks_for_a_gpu() -> None:
    for name, container in ALL_CONTAINERS:
        resources = container["resources"]
        gpus = {part: resources.get(part, {}).get("nvidia.com/gpu") for part in resources}
        if name == "kiln-worker-gpu":
            assert gpus == {"requests": 1, "limits": 1}
            assert option(argv(container), "--queues") == "gpu"
        else:
            assert set(gpus.values()) == {None}, name
    for name in ["kiln-worker-cpu", "kiln-worker-user-code"]:
        assert option(argv(containers(name)[0]), "--queues") == "cpu"


def test_the_server_listens_in_its_pod_behind_a_clusterip_service() -> None:
    (server,) = containers("kiln-server")
    words = argv(server)
    assert words[:2] == ["jobs", "server"]
    assert option(words, "--host") == "0.0.0.0"  # inside the pod only; the Service reaches it
    port = int(option(words, "--port"))
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"http": port}
    service = BY_KEY["Service/kiln-server"]
    assert service["spec"]["type"] == "ClusterIP"
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == port == 8321
    assert ports[service_port["targetPort"]] == port
    # The selector picks the server's pods, and no worker's.
    selector = service["spec"]["selector"].items()
    chosen = [n for n in WORKLOADS if selector <= WORKLOADS[n]["spec"]["template"]["metadata"]
              ["labels"].items()]  # fmt: skip
    assert chosen == ["kiln-server"]


def test_nothing_is_reachable_from_outside_the_cluster() -> None:
    for service in SERVICE_OBJECTS:
        assert service["spec"]["type"] == "ClusterIP", key(service)
        assert "externalIPs" not in service["spec"], key(service)
        assert all("nodePort" not in p for p in service["spec"]["ports"]), key(service)
    for name, container in ALL_CONTAINERS:
        assert all("hostPort" not in p for p in container.get("ports", [])), name
    for name in WORKLOADS:
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod(name)), name


def test_the_server_probes_ready_and_health_which_the_app_serves(tmp_path: Path) -> None:
    from kiln.server import create_app
    from kiln.settings import Settings

    (server,) = containers("kiln-server")
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    probes = {"readinessProbe": "/ready", "livenessProbe": "/health"}
    for probe, path in probes.items():
        get = server[probe]["httpGet"]
        assert get["path"] == path and ports[get["port"]] == 8321, probe
    app = create_app(Settings(home=tmp_path))  # the embedded SQLite database
    routes = {getattr(route, "path", None) for route in app.routes}
    app.state.kiln.engine.dispose()
    assert set(probes.values()) <= routes


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_pod_runs_hardened(name: str) -> None:
    """The "restricted" Pod Security Standard that namespace.yaml enforces, and more."""
    labels = BY_KEY["Namespace/kiln"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    spec = pod(name)
    user = re.findall(r"^USER\s+(\d+)", DOCKERFILE, re.M)[-1]
    context = spec["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == int(user) != 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False  # nothing talks to the API server
    assert all("hostPath" not in volume for volume in spec.get("volumes", []))
    for container in containers(name):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert not context.get("privileged", False), container["name"]
        assert context.get("runAsUser") != 0 and context.get("runAsNonRoot") is not False


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_read_only_containers_write_to_emptydirs_for_home_and_tmp(name: str) -> None:
    found = re.search(r"^ENV .*\bKILN_HOME=(\S+)", DOCKERFILE, re.M)
    assert found, "the Dockerfile sets no KILN_HOME"
    kiln_home = Path(found[1])
    volumes = {v["name"]: v for v in pod(name)["volumes"]}
    for volume in volumes.values():
        assert set(volume) == {"name", "emptyDir"}, (name, volume)
        assert quantity(volume["emptyDir"]["sizeLimit"]) > 0, (name, volume)
    for container in containers(name):
        mounts = {Path(m["mountPath"]): m["name"] for m in container["volumeMounts"]}
        assert set(mounts.values()) <= set(volumes), name
        assert Path("/tmp") in mounts, name
        assert any(kiln_home.is_relative_to(path) for path in mounts if path != Path("/")), name


@pytest.mark.parametrize(("name", "container"), ALL_CONTAINERS, ids=CONTAINER_IDS)
def test_every_container_requests_no_more_than_its_limits(name: str, container: Doc) -> None:
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert {"cpu", "memory"} <= set(requests) and set(requests) == set(limits), name
    for resource, limit in limits.items():
        assert 0 < quantity(requests[resource]) <= quantity(limit), (name, resource)


def test_only_the_user_code_worker_runs_users_model_files_and_it_starts_with_none() -> None:
    from kiln.settings import Settings

    for name, container in ALL_CONTAINERS:
        env, _ = env_refs(container)
        if "worker" not in name:
            assert not any(k.startswith(("KILN_ALLOW_", "KILN_SANDBOX_")) for k in env), name
            continue
        user_code = name == "kiln-worker-user-code"
        assert env["KILN_ALLOW_USER_CODE"] == ("true" if user_code else "false"), name
        sandbox = {k: v for k, v in env.items() if k.startswith("KILN_SANDBOX_")}
        assert {"KILN_SANDBOX_MEMORY_MB", "KILN_SANDBOX_WALL_S"} <= set(sandbox), name
        for var, value in sandbox.items():
            field = Settings.model_fields[var.removeprefix("KILN_").lower()]
            assert value == str(field.default), (name, var)
    # Whoever may submit jobs may run code there: on only when an overlay says so.
    assert WORKLOADS["kiln-worker-user-code"]["spec"]["replicas"] == 0


def test_the_ingress_example_terminates_tls_in_front_of_the_server() -> None:
    from kiln.server.app import body_limit
    from kiln.settings import Settings

    (ingress,) = [doc for doc in EXAMPLE_DOCS if doc["kind"] == "Ingress"]
    spec = ingress["spec"]
    hosts = {rule["host"] for rule in spec["rules"]}
    assert hosts == {h for tls in spec["tls"] for h in tls["hosts"]}
    assert ingress["metadata"]["namespace"] == "kiln"
    server_ports = {p["name"] for p in BY_KEY["Service/kiln-server"]["spec"]["ports"]}
    for rule in spec["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "kiln-server" and backend["port"]["name"] in server_ports
    # The proxy must let through every body the server takes, so that the server's 413 (with
    # its message) is the one users see. nginx's m is MiB.
    size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    found = re.fullmatch(r"(\d+)m", size)
    assert found and int(found[1]) * 2**20 >= body_limit(Settings()), size


def test_the_readmes_commands_name_what_the_manifests_make(tmp_path: Path) -> None:
    readme = (BASE / "README.md").read_text()
    commands = re.findall(r"kubectl [^`\n]* -- (jobs [^`\n]+)", readme)
    assert "jobs token create --user admin --role admin" in commands
    for command in commands:
        run_jobs_help(command.split()[1:], {}, tmp_path)
    for kind, name in re.findall(r"\b(deploy|deployment|job|svc)/(kiln-[a-z-]+)", readme):
        kind = {"deploy": "Deployment", "deployment": "Deployment", "job": "Job"}.get(
            kind, "Service"
        )
        assert f"{kind}/{name}" in BY_KEY, f"README.md names {kind}/{name}, which is not made"

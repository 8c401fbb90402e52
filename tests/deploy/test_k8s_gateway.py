"""The payment gateway in Kubernetes: `orderflow gateway` as its contract says, the Services its
clients and it reach each other through, and each process holding only the gateway secrets it
uses. Also for every process of the app image: its command and its settings exist in the code.
Network reachability is in test_k8s_network.py."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

import pytest

from orderflow.settings import Settings
from tests.deploy.cli_contract import check_invocation
from tests.deploy.support import (
    OVERLAYS,
    Manifest,
    by_kind,
    containers,
    pod_spec,
    render,
    workloads,
)

GATEWAY_PORT = 8090
# Which gateway secret each process reads: the workers call it with the API key, the api checks
# its webhooks' signatures, the gateway needs both. The relay and migrate need neither.
GATEWAY_SECRETS = {
    "api": {"ORDERFLOW_GATEWAY_WEBHOOK_SECRET"},
    "worker": {"ORDERFLOW_GATEWAY_API_KEY"},
    "gateway": {"ORDERFLOW_GATEWAY_API_KEY", "ORDERFLOW_GATEWAY_WEBHOOK_SECRET"},
}


def app_image(manifests: tuple[Manifest, ...]) -> str:
    """The orderflow image of this render (the migrate Job runs it)."""
    (migrate,) = by_kind(manifests, "Job").values()
    image: str = pod_spec(migrate)["containers"][0]["image"]
    return image


def app_containers(manifests: tuple[Manifest, ...]) -> dict[str, Manifest]:
    """The main container of every workload that runs the app image, by workload name."""
    image = app_image(manifests)
    found = {}
    for kind in ("Deployment", "Job"):
        for name, workload in by_kind(manifests, kind).items():
            for container in pod_spec(workload)["containers"]:
                if container["image"] == image:
                    found[name] = container
    return found


def config(manifests: tuple[Manifest, ...]) -> dict[str, str]:
    """The data of the (hash-suffixed) ConfigMap orderflow-config."""
    (data,) = [
        cm["data"]
        for name, cm in by_kind(manifests, "ConfigMap").items()
        if name.startswith("orderflow-config")
    ]
    return dict(data)


def plain_env(container: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def container_port(deployment: Manifest, port: int | str) -> int:
    """The container port a Service's targetPort (a number or a port name) lands on."""
    (container,) = pod_spec(deployment)["containers"]
    for declared in container["ports"]:
        if port in (declared["containerPort"], declared.get("name")):
            number: int = declared["containerPort"]
            return number
    raise AssertionError(f"{deployment['metadata']['name']} declares no port {port}")


def service_lands_on(manifests: tuple[Manifest, ...], url: str) -> tuple[str, int]:
    """The Deployment and container port a request to ``url`` reaches through its Service."""
    parts = urlsplit(url)
    assert parts.scheme == "http", url
    service = by_kind(manifests, "Service")[str(parts.hostname)]
    port = parts.port or 80
    entries = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert len(entries) == 1, f"{url}: the Service {parts.hostname} has no port {port}"
    (entry,) = entries
    deployments = by_kind(manifests, "Deployment")
    target = service["spec"]["selector"]["app.kubernetes.io/name"]
    return target, container_port(deployments[target], entry.get("targetPort", port))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_runs_its_command_on_its_port_with_probes_on_healthz(overlay: str) -> None:
    manifests = render(f"overlays/{overlay}")
    deployment = by_kind(manifests, "Deployment")["gateway"]
    (container,) = pod_spec(deployment)["containers"]
    assert container["image"] == app_image(manifests)
    args = container["args"]
    assert args[0] == "gateway"
    assert args[args.index("--host") + 1] == "0.0.0.0"  # a pod listens on its IP
    assert int(args[args.index("--port") + 1]) == GATEWAY_PORT
    assert container_port(deployment, "http") == GATEWAY_PORT
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check = container[probe]["httpGet"]
        assert (check["path"], check["port"]) == ("/healthz", "http"), probe
    assert "initContainers" not in pod_spec(deployment), "it creates its own schema"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_workers_reach_the_gateway_and_the_gateway_the_api_through_their_services(
    overlay: str,
) -> None:
    manifests = render(f"overlays/{overlay}")
    gateway_url = config(manifests)["ORDERFLOW_GATEWAY_URL"]
    assert service_lands_on(manifests, gateway_url) == ("gateway", GATEWAY_PORT)
    (gateway,) = pod_spec(by_kind(manifests, "Deployment")["gateway"])["containers"]
    webhook_url = plain_env(gateway)["ORDERFLOW_GATEWAY_WEBHOOK_URL"]
    api_port = container_port(by_kind(manifests, "Deployment")["api"], "http")
    assert service_lands_on(manifests, webhook_url) == ("api", api_port)
    # the path the api serves the webhooks on: the one the code's default URL names
    default = Settings.model_fields["gateway_webhook_url"].default
    assert urlsplit(webhook_url).path == urlsplit(default).path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_process_reads_only_the_gateway_secrets_it_uses(overlay: str) -> None:
    manifests = render(f"overlays/{overlay}")
    for workload in workloads(manifests):
        name = workload["metadata"]["name"]
        refs = {
            env["valueFrom"]["secretKeyRef"]["key"]
            for container in containers(workload)
            for env in container.get("env", [])
            if "secretKeyRef" in env.get("valueFrom", {})
        }
        gateway_refs = {key for key in refs if key.startswith("ORDERFLOW_GATEWAY_")}
        assert gateway_refs == GATEWAY_SECRETS.get(name, set()), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_processes_run_real_commands_with_real_settings(overlay: str) -> None:
    manifests = render(f"overlays/{overlay}")
    fields = {f"ORDERFLOW_{field.upper()}" for field in Settings.model_fields}
    shared = set(config(manifests))
    assert shared <= fields, f"config.env: not settings of orderflow: {shared - fields}"
    found = app_containers(manifests)
    assert {"api", "relay", "worker", "gateway", "migrate"} <= set(found)
    for name, container in found.items():
        check_invocation(container["args"])
        own = {env["name"] for env in container.get("env", [])}
        assert own <= fields, f"{name}: not settings of orderflow: {own - fields}"


def test_the_dev_webhook_secret_is_a_standard_webhooks_secret() -> None:
    secret = by_kind(render("overlays/dev"), "Secret")["orderflow-secrets"]
    value = base64.b64decode(secret["data"]["ORDERFLOW_GATEWAY_WEBHOOK_SECRET"]).decode()
    prefix, _, key = value.partition("_")
    assert prefix == "whsec", value
    try:
        decoded = base64.b64decode(key, validate=True)
    except binascii.Error as exc:
        raise AssertionError(f"not base64 after whsec_: {key}") from exc
    assert len(decoded) >= 32, "32 random bytes, as `openssl rand -base64 32` gives"

"""The Kustomize overlays render, satisfy the Kubernetes schemas and our deployment policies.

Rendering uses `kubectl kustomize` (no cluster is contacted); schemas come from the
kubernetes-validate package, which bundles them, so all of this runs offline.
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest

from tests.deploy.support import (
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    Manifest,
    by_kind,
    containers,
    custom_resource_errors,
    load_all,
    load_yaml,
    pod_spec,
    render,
    workloads,
)

TARGETS = ("base", *(f"overlays/{name}" for name in OVERLAYS))
# Their images' entrypoints write outside any volume; every other container's root is read-only.
WRITABLE_ROOT = {"postgres", "rabbitmq"}
LONG_RUNNING = ("Deployment", "StatefulSet")
SECRET_NAME = "orderflow-secrets"


def secret_keys_documented() -> set[str]:
    lines = (K8S / "secrets.example.env").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("target", TARGETS)
def test_kustomization_renders(target: str) -> None:
    kinds = {m["kind"] for m in render(target)}
    assert {"Deployment", "StatefulSet", "Service", "Ingress", "ScaledObject"} <= kinds


@pytest.mark.parametrize("target", TARGETS)
def test_every_manifest_satisfies_the_kubernetes_schema(target: str) -> None:
    errors = []
    for manifest in render(target):
        custom = custom_resource_errors(manifest)  # KEDA's, against its CRD (tests/deploy/crds)
        if custom is not None:
            errors += [f"{manifest['kind']}/{manifest['metadata']['name']}: {e}" for e in custom]
            continue
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_every_yaml_file_under_k8s_is_used_by_a_kustomization() -> None:
    used: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = load_yaml(kustomization)
        here = kustomization.parent
        for entry in [*spec.get("resources", []), *(p["path"] for p in spec.get("patches", []))]:
            path = (here / entry).resolve()
            assert path.exists(), f"{kustomization}: {entry} does not exist"
            used.add(path / "kustomization.yaml" if path.is_dir() else path)
        used.add(kustomization.resolve())
    orphans = [str(p.relative_to(K8S)) for p in K8S.rglob("*.yaml") if p.resolve() not in used]
    assert not orphans, f"YAML files no kustomization uses: {orphans}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(overlay: str) -> None:
    for workload in workloads(render(overlay_path(overlay))):
        for container in containers(workload):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), (
                    f"{workload['metadata']['name']}/{container['name']} lacks {kind}"
                )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_have_liveness_and_readiness_probes(overlay: str) -> None:
    for workload in workloads(render(overlay_path(overlay))):
        if workload["kind"] not in LONG_RUNNING:
            continue
        for container in pod_spec(workload)["containers"]:
            name = f"{workload['metadata']['name']}/{container['name']}"
            assert "livenessProbe" in container, f"{name} has no liveness probe"
            assert "readinessProbe" in container, f"{name} has no readiness probe"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_relay_and_worker_probe_healthz_and_readyz_on_their_metrics_port(overlay: str) -> None:
    # /healthz there fails when the loop is stuck or a duty keeps failing: the kubelet restarts.
    # /readyz fails while the broker is away: the pod can do no work, but is not restarted.
    deployments = by_kind(render(overlay_path(overlay)), "Deployment")
    for name in ("relay", "worker"):
        (container,) = pod_spec(deployments[name])["containers"]
        probe = container["livenessProbe"]["httpGet"]
        assert (probe["path"], probe["port"]) == ("/healthz", "metrics"), name
        probe = container["readinessProbe"]["httpGet"]
        assert (probe["path"], probe["port"]) == ("/readyz", "metrics"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_probes_use_healthz_for_liveness_and_readyz_for_readiness(overlay: str) -> None:
    (api,) = pod_spec(by_kind(render(overlay_path(overlay)), "Deployment")["api"])["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_run_as_non_root_without_capabilities(overlay: str) -> None:
    for workload in workloads(render(overlay_path(overlay))):
        pod_context = pod_spec(workload).get("securityContext", {})
        assert pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for container in containers(workload):
            name = f"{workload['metadata']['name']}/{container['name']}"
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, f"{name} may run as root"
            assert context.get("runAsUser", 0) != 0, f"{name} runs as uid 0"
            assert context.get("allowPrivilegeEscalation") is False, name
            assert context.get("capabilities", {}).get("drop") == ["ALL"], name
            read_only = context.get("readOnlyRootFilesystem") is True
            assert read_only or workload["metadata"]["name"] in WRITABLE_ROOT, (
                f"{name} has a writable root file system"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_to_a_tag_never_latest(overlay: str) -> None:
    for workload in workloads(render(overlay_path(overlay))):
        for container in containers(workload):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name, f"{image} has no tag"
            assert "/" not in tag, f"{image} has no tag"
            assert tag != "latest", f"{image} uses latest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_and_statefulset_has_a_disruption_budget(overlay: str) -> None:
    manifests = render(overlay_path(overlay))
    budgets = by_kind(manifests, "PodDisruptionBudget").values()
    for kind in LONG_RUNNING:
        for name, workload in by_kind(manifests, kind).items():
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert any(
                budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
                for budget in budgets
            ), f"{kind}/{name} has no PodDisruptionBudget"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_leave_room_to_drain_a_node(overlay: str) -> None:
    manifests = render(overlay_path(overlay))
    deployments = by_kind(manifests, "Deployment")
    for name, budget in by_kind(manifests, "PodDisruptionBudget").items():
        if "minAvailable" in budget["spec"] and name in deployments:
            replicas = deployments[name]["spec"]["replicas"]
            assert budget["spec"]["minAvailable"] < replicas, f"PDB {name} blocks every drain"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_runs_one_process_per_pod_so_its_metrics_are_whole(overlay: str) -> None:
    (api,) = pod_spec(by_kind(render(overlay_path(overlay)), "Deployment")["api"])["containers"]
    args = api["args"]
    assert args[args.index("--workers") + 1] == "1", "metrics are per process: scale pods"


def test_production_runs_the_specified_replicas_with_zero_downtime_rollouts() -> None:
    manifests = render("overlays/production")
    deployments = by_kind(manifests, "Deployment")
    assert deployments["api"]["spec"]["replicas"] >= 3
    assert deployments["worker"]["spec"]["replicas"] >= 2
    assert deployments["relay"]["spec"]["replicas"] >= 2
    for name in ("api", "relay", "worker"):
        rolling = deployments[name]["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0, name
    assert by_kind(manifests, "StatefulSet")["rabbitmq"]["spec"]["replicas"] == 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_ingress_routes_to_the_api_only(overlay: str) -> None:
    manifests = render(overlay_path(overlay))
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(manifests)]
    services = by_kind(manifests, "Service")
    for name, service in services.items():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), name
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", f"{name} is exposed"
    backends = {
        path["backend"]["service"]["name"]
        for ingress in by_kind(manifests, "Ingress").values()
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"api"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_referenced_config_maps_and_secret_keys_exist(overlay: str) -> None:
    manifests = render(overlay_path(overlay))
    config_maps = set(by_kind(manifests, "ConfigMap"))
    secret_keys = secret_keys_documented()
    for workload in workloads(manifests):
        for container in containers(workload):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET_NAME, ref
                    assert ref["key"] in secret_keys, f"{ref['key']} not in secrets.example.env"
        for volume in pod_spec(workload).get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, volume


def test_dev_overlay_provides_every_secret_key() -> None:
    secret = by_kind(render("overlays/dev"), "Secret")[SECRET_NAME]
    assert set(secret["data"]) == secret_keys_documented()


def test_production_overlay_ships_no_secret_and_no_placeholder() -> None:
    manifests = render("overlays/production")
    assert not by_kind(manifests, "Secret"), "production must not ship Secret objects"
    text = "\n".join(str(m) for m in manifests)
    for placeholder in ("CHANGE-ME", "dev-only", "changeme", "password123"):
        assert placeholder not in text, f"production render contains {placeholder!r}"


def test_production_and_dev_differ_where_they_should() -> None:
    dev, prod = render("overlays/dev"), render("overlays/production")
    assert api_host(dev) != api_host(prod)
    assert api_image(dev) != api_image(prod)
    assert by_kind(prod, "Ingress")["api"]["spec"]["tls"], "production serves TLS"
    assert {m["metadata"].get("namespace") for m in dev if m["kind"] != "Namespace"} == {
        "orderflow-dev"
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scrape_ports_match_the_processes_metrics_ports(overlay: str) -> None:
    manifests = render(overlay_path(overlay))
    deployments = by_kind(manifests, "Deployment")
    prometheus = by_kind(manifests, "ConfigMap")
    (config_map,) = [cm for name, cm in prometheus.items() if name.startswith("prometheus-config")]
    config = load_all(config_map["data"]["prometheus.yml"])[0]
    services = by_kind(manifests, "Service")
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            (service_name,) = sd["names"]
            service = services[service_name]
            selected = service["spec"]["selector"]["app.kubernetes.io/name"]
            if selected in deployments:
                (container,) = pod_spec(deployments[selected])["containers"]
                ports = {p["containerPort"] for p in container["ports"]}
                assert sd["port"] in ports, f"{job['job_name']} scrapes {sd['port']}, not {ports}"
                annotations = deployments[selected]["spec"]["template"]["metadata"]["annotations"]
                assert annotations["prometheus.io/port"] == str(sd["port"])


def api_host(manifests: tuple[Manifest, ...]) -> str:
    host: str = by_kind(manifests, "Ingress")["api"]["spec"]["rules"][0]["host"]
    return host


def api_image(manifests: tuple[Manifest, ...]) -> str:
    image: str = pod_spec(by_kind(manifests, "Deployment")["api"])["containers"][0]["image"]
    return image


def overlay_path(name: str) -> str:
    return f"overlays/{name}"


def test_production_rabbitmq_cluster_suffix_names_the_overlay_namespace() -> None:
    overlay = load_yaml(K8S / "overlays/production/kustomization.yaml")
    conf = (K8S / "overlays/production/rabbitmq/rabbitmq.conf").read_text()
    suffix = re.search(r"^cluster_formation\.k8s\.hostname_suffix = (\S+)$", conf, re.MULTILINE)
    assert suffix, "production rabbitmq.conf has no hostname_suffix"
    assert suffix[1] == f".rabbitmq-headless.{overlay['namespace']}.svc.cluster.local"

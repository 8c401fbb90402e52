"""In the cluster, Prometheus keeps its data on a volume claim and sends alerts to Alertmanager."""

from __future__ import annotations

import pytest

from tests.deploy.support import DEPLOY, OVERLAYS, by_kind, load_all, pod_spec, render


def config_map(manifests: tuple[dict[str, object], ...], prefix: str) -> dict[str, str]:
    """The data of the (hash-suffixed) ConfigMap whose name starts with ``prefix``."""
    (found,) = [m for n, m in by_kind(manifests, "ConfigMap").items() if n.startswith(prefix)]
    data: dict[str, str] = found["data"]
    return data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_keeps_its_data_on_a_volume_claim(overlay: str) -> None:
    manifests = render(f"overlays/{overlay}")
    prometheus = by_kind(manifests, "Deployment")["prometheus"]
    assert prometheus["spec"]["strategy"]["type"] == "Recreate", "one writer of the volume"
    (container,) = pod_spec(prometheus)["containers"]
    assert "--storage.tsdb.path=/prometheus" in container["args"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/prometheus"]
    volumes = {v["name"]: v for v in pod_spec(prometheus)["volumes"]}
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim in by_kind(manifests, "PersistentVolumeClaim")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_alertmanager_runs_with_the_repository_config_and_prometheus_sends_to_it(
    overlay: str,
) -> None:
    manifests = render(f"overlays/{overlay}")
    alertmanager = by_kind(manifests, "Deployment")["alertmanager"]
    (container,) = pod_spec(alertmanager)["containers"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in container["args"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(alertmanager)["volumes"]}
    assert volumes[mounts["/etc/alertmanager"]]["configMap"]["name"].startswith(
        "alertmanager-config"
    )
    assert "persistentVolumeClaim" in volumes[mounts["/alertmanager"]], "silences survive"
    shipped = config_map(manifests, "alertmanager-config")["alertmanager.yml"]
    assert shipped == (DEPLOY / "alertmanager" / "alertmanager.yml").read_text()

    service = by_kind(manifests, "Service")["alertmanager"]
    port = service["spec"]["ports"][0]["port"]
    prometheus = load_all(config_map(manifests, "prometheus-config")["prometheus.yml"])[0]
    targets = [
        target
        for manager in prometheus["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    assert targets == [f"alertmanager:{port}"]
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    assert "alertmanager" in jobs, "Prometheus watches Alertmanager too"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_processes_are_scraped_whether_or_not_they_are_ready(overlay: str) -> None:
    # A relay or worker that lost the broker is not ready; dropped from discovery, it would
    # vanish from Prometheus and fire "process absent" instead of the broker's own alerts.
    services = by_kind(render(f"overlays/{overlay}"), "Service")
    for name in ("api-pods", "relay-pods", "worker-pods"):
        assert services[name]["spec"].get("publishNotReadyAddresses") is True, name

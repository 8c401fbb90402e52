"""Scaling: the api on CPU and memory, the workers on queue depth (KEDA), within the quota.

The ScaledObject is checked against KEDA's CRD schema (tests/deploy/crds) and against the work
queues the code declares, so a new saga step without a trigger fails here.
"""

from __future__ import annotations

import copy
import re
from typing import Any, cast

import pytest

from orderflow.entrypoints.bootstrap import Deps, build_registry
from orderflow.kernel.topology import Names
from orderflow.settings import Settings
from tests.deploy.support import (
    OVERLAYS,
    Manifest,
    by_kind,
    containers,
    custom_resource_errors,
    pod_spec,
    render,
    workloads,
)

# The RabbitMQ scaler's documented metadata (KEDA 2.x).
RABBITMQ_KEYS = {
    "host",
    "hostFromEnv",
    "protocol",
    "mode",
    "value",
    "activationValue",
    "queueName",
    "vhostName",
    "useRegex",
    "excludeUnacknowledged",
    "operation",
    "pageSize",
    "timeout",
    "unsafeSsl",
}


def overlay_path(name: str) -> str:
    return f"overlays/{name}"


def work_queues(manifests: tuple[Manifest, ...]) -> set[str]:
    """The work queues the code declares under the overlay's settings (autopilot, prefix)."""
    config = by_kind(manifests, "ConfigMap")
    (env,) = [cm["data"] for name, cm in config.items() if name.startswith("orderflow-config")]
    settings = Settings(
        autopilot=env["ORDERFLOW_AUTOPILOT"], queue_prefix=env["ORDERFLOW_QUEUE_PREFIX"]
    )
    registry = build_registry(Deps(settings=settings, pool=cast(Any, None)))
    names = Names.from_settings(settings)
    return {names.handler(name).work for name in registry.names}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_autoscales_on_cpu_and_memory_and_nothing_else_uses_an_hpa(overlay: str) -> None:
    manifests = render(overlay_path(overlay))
    (hpa,) = by_kind(manifests, "HorizontalPodAutoscaler").values()
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "api")
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_scale_on_the_depth_of_every_work_queue(overlay: str) -> None:
    manifests = render(overlay_path(overlay))
    deployments = by_kind(manifests, "Deployment")
    scaled = by_kind(manifests, "ScaledObject")
    assert set(scaled) == {"worker"}
    spec = scaled["worker"]["spec"]
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "worker")
    assert 1 <= spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    (worker,) = pod_spec(deployments["worker"])["containers"]
    assert target["envSourceContainerName"] == worker["name"]
    worker_env = {e["name"] for e in worker["env"]}
    queues = []
    for trigger in spec["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "rabbitmq", trigger
        assert set(meta) <= RABBITMQ_KEYS, f"unknown rabbitmq metadata: {set(meta) - RABBITMQ_KEYS}"
        assert (meta["protocol"], meta["mode"]) == ("amqp", "QueueLength"), trigger["name"]
        assert float(meta["value"]) > 0
        assert meta["hostFromEnv"] in worker_env, "the broker URL comes from the worker's env"
        queues.append(meta["queueName"])
    assert len(queues) == len(set(queues)), "a queue has two triggers"
    assert set(queues) == work_queues(manifests), "triggers and the code's work queues differ"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_scaled_object_satisfies_the_keda_crd(overlay: str) -> None:
    scaled = by_kind(render(overlay_path(overlay)), "ScaledObject")["worker"]
    assert custom_resource_errors(scaled) == []


def test_the_crd_check_rejects_what_keda_would() -> None:
    good = by_kind(render("base"), "ScaledObject")["worker"]
    unknown_field = copy.deepcopy(good)
    unknown_field["spec"]["maxReplicas"] = 3  # the HPA's spelling
    no_triggers = copy.deepcopy(good)
    del no_triggers["spec"]["triggers"]
    number_metadata = copy.deepcopy(good)
    number_metadata["spec"]["triggers"][0]["metadata"]["value"] = 200
    for broken in (unknown_field, no_triggers, number_metadata):
        assert custom_resource_errors(broken), broken["spec"]


def quantity(value: str | int) -> float:
    """A Kubernetes quantity as a number (cores or bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    text = str(value)
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match, text
    return float(match[1]) * units.get(match[2], 1)


def most_replicas(manifests: tuple[Manifest, ...]) -> dict[str, int]:
    """The most replicas an autoscaler (HPA or KEDA) may give each workload it targets."""
    hpas = by_kind(manifests, "HorizontalPodAutoscaler").values()
    keda = by_kind(manifests, "ScaledObject").values()
    return {
        **{h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"] for h in hpas},
        **{s["spec"]["scaleTargetRef"]["name"]: s["spec"]["maxReplicaCount"] for s in keda},
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_quota_allows_every_autoscaler_at_its_maximum(overlay: str) -> None:
    manifests = render(overlay_path(overlay))
    maxima = most_replicas(manifests)
    totals: dict[str, float] = {}
    pods = 0
    for workload in workloads(manifests):
        name = workload["metadata"]["name"]
        count = maxima.get(name, workload["spec"].get("replicas", 1))
        count += 1 if workload["kind"] == "Deployment" else 0  # the rolling update's surge pod
        pods += count
        for container in containers(workload):
            for kind in ("requests", "limits"):
                for resource, value in container["resources"][kind].items():
                    key = f"{kind}.{resource}"
                    totals[key] = totals.get(key, 0.0) + count * quantity(value)
    (quota,) = by_kind(manifests, "ResourceQuota").values()
    hard = quota["spec"]["hard"]
    for key, total in totals.items():
        assert total <= quantity(hard[key]), (
            f"{overlay}: {key} needs {total:.4g}, quota {hard[key]}"
        )
    assert pods <= int(hard["pods"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_quota_allows_every_volume_claim(overlay: str) -> None:
    manifests = render(overlay_path(overlay))
    claims = [c["spec"] for c in by_kind(manifests, "PersistentVolumeClaim").values()]
    for workload in by_kind(manifests, "StatefulSet").values():
        templates = [t["spec"] for t in workload["spec"].get("volumeClaimTemplates", [])]
        claims += templates * workload["spec"].get("replicas", 1)
    (quota,) = by_kind(manifests, "ResourceQuota").values()
    hard = quota["spec"]["hard"]
    storage = sum(quantity(c["resources"]["requests"]["storage"]) for c in claims)
    assert storage <= quantity(hard["requests.storage"]), f"{overlay}: {storage / 2**30} Gi"
    assert len(claims) <= int(hard["persistentvolumeclaims"])

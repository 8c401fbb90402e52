"""What can reach what: the public Ingress's paths, and network policies that deny by default.

The rendered policies are evaluated as a cluster would (a pod is isolated in a direction once a
policy selects it for that direction; a connection needs the sender's egress and the receiver's
ingress) for every path that must work and a set that must not.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from tests.deploy.support import OVERLAYS, Manifest, by_kind, render, workloads

INTERNET = "203.0.113.10"  # a public address (documentation range)


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace and labels) or an address outside the cluster."""

    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    address: str = ""


OUTSIDE = {
    "ingress-controller": Peer("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    "dns": Peer("kube-system", {"k8s-app": "kube-dns"}),
    "keda": Peer("keda", {"app.kubernetes.io/name": "keda-operator"}),
    "internet": Peer(address=INTERNET),
    "private": Peer(address="10.1.2.3"),
}

MUST_CONNECT = [
    ("ingress-controller", "api", 8000),
    *(
        (app, backend, port)
        for app in ("api", "relay", "worker", "migrate")
        for backend, port in (("postgres", 5432), ("rabbitmq", 5672), ("redis", 6379))
    ),
    ("prometheus", "api", 8000),
    ("prometheus", "relay", 9101),
    ("prometheus", "worker", 9102),
    ("prometheus", "rabbitmq", 15692),
    ("prometheus", "alertmanager", 9093),
    ("grafana", "prometheus", 9090),
    ("keda", "rabbitmq", 5672),
    ("rabbitmq", "rabbitmq", 25672),
    ("rabbitmq", "rabbitmq", 4369),
    ("worker", "internet", 443),  # webhook deliveries
    ("worker", "gateway", 8090),  # payment steps
    ("gateway", "postgres", 5432),  # its ledger
    ("gateway", "api", 8000),  # its webhooks
    ("alertmanager", "internet", 443),  # receivers
]

MUST_NOT_CONNECT = [
    ("ingress-controller", "api", 9101),
    ("ingress-controller", "relay", 9101),
    ("ingress-controller", "worker", 9102),
    ("ingress-controller", "prometheus", 9090),
    ("ingress-controller", "alertmanager", 9093),
    ("ingress-controller", "grafana", 3000),
    ("ingress-controller", "postgres", 5432),
    ("ingress-controller", "rabbitmq", 15672),
    ("api", "rabbitmq", 15672),
    ("api", "prometheus", 9090),
    ("api", "internet", 443),
    ("relay", "internet", 443),
    ("worker", "private", 443),
    ("grafana", "postgres", 5432),
    ("prometheus", "postgres", 5432),
    ("redis", "postgres", 5432),
    ("postgres", "internet", 443),
    ("keda", "postgres", 5432),
    ("ingress-controller", "gateway", 8090),
    ("api", "gateway", 8090),
    ("relay", "gateway", 8090),
    ("prometheus", "gateway", 8090),
    ("gateway", "rabbitmq", 5672),
    ("gateway", "redis", 6379),
    ("gateway", "internet", 443),
    ("gateway", "worker", 9102),
]

# Every port a pod of the system listens on, and the internet's.
PORTS = (
    *(53, 80, 443, 3000, 4369, 5432, 5672, 6379, 8000, 8090),
    *(9090, 9093, 9101, 9102, 15672, 15692, 25672),
)


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels only: the policies use nothing else) selects."""
    assert set(selector) <= {"matchLabels"}, selector
    wanted: dict[str, str] = selector.get("matchLabels", {})
    return wanted.items() <= labels.items()


def peer_matches(rule_peer: Manifest, peer: Peer, namespace: str) -> bool:
    """Whether one `from`/`to` entry of a policy in ``namespace`` covers ``peer``."""
    if "ipBlock" in rule_peer:
        if not peer.address:
            return False  # pods are matched by selectors here, as the policies intend
        block = rule_peer["ipBlock"]
        address = ipaddress.ip_address(peer.address)
        inside = address in ipaddress.ip_network(block["cidr"])
        return inside and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if peer.address:
        return False
    if "namespaceSelector" in rule_peer:
        ns_labels = {"kubernetes.io/metadata.name": peer.namespace}
        in_namespace = selects(rule_peer["namespaceSelector"], ns_labels)
    else:
        in_namespace = peer.namespace == namespace
    return in_namespace and selects(rule_peer.get("podSelector", {}), peer.labels)


def allows(policies: list[Manifest], pod: Peer, other: Peer, port: int, direction: str) -> bool:
    """Whether ``pod``'s policies let traffic on ``port`` go to (Egress) or come from (Ingress)
    ``other``."""
    key, ends = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    applying = [
        p["spec"]
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and selects(p["spec"]["podSelector"], pod.labels)
        and direction in p["spec"]["policyTypes"]
    ]
    if not applying:
        return True  # not isolated in this direction
    for spec in applying:
        for rule in spec.get(key, []):
            peers = rule.get(ends)
            ports = rule.get("ports")
            if peers is not None and not any(peer_matches(e, other, pod.namespace) for e in peers):
                continue
            if ports is None or any(p.get("port") in (None, port) for p in ports):
                return True
    return False


def connects(policies: list[Manifest], source: Peer, target: Peer, port: int) -> bool:
    """A TCP connection from ``source`` to ``target:port``: egress here, ingress there."""
    out = source.address or allows(policies, source, target, port, "Egress")
    return bool(out) and (bool(target.address) or allows(policies, target, source, port, "Ingress"))


def peers(manifests: tuple[Manifest, ...]) -> dict[str, Peer]:
    """Every pod of the overlay by workload name, and the ends outside it."""
    pods = {
        w["metadata"]["name"]: Peer(
            w["metadata"]["namespace"], w["spec"]["template"]["metadata"]["labels"]
        )
        for w in workloads(manifests)
    }
    return {**pods, **OUTSIDE}


def connections(
    manifests: tuple[Manifest, ...], paths: list[tuple[str, str, int]]
) -> list[tuple[tuple[str, str, int], bool]]:
    """Each (from, to, port) path with whether the overlay's policies let it connect."""
    policies = list(by_kind(manifests, "NetworkPolicy").values())
    ends = peers(manifests)
    return [((a, b, port), connects(policies, ends[a], ends[b], port)) for a, b, port in paths]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_denied_both_ways_by_default(overlay: str) -> None:
    policy = by_kind(render(f"overlays/{overlay}"), "NetworkPolicy")["default-deny"]["spec"]
    assert policy["podSelector"] == {}
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in policy, "default-deny allows nothing in"
    assert "egress" not in policy, "default-deny allows nothing out"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_paths_the_system_needs_are_open(overlay: str) -> None:
    manifests = render(f"overlays/{overlay}")
    closed = [path for path, connected in connections(manifests, MUST_CONNECT) if not connected]
    assert not closed, f"blocked: {closed}"
    policies = list(by_kind(manifests, "NetworkPolicy").values())
    ends = peers(manifests)
    for workload in workloads(manifests):
        name = workload["metadata"]["name"]
        assert allows(policies, ends[name], ends["dns"], 53, "Egress"), f"{name} cannot resolve"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_other_path_is_closed(overlay: str) -> None:
    manifests = render(f"overlays/{overlay}")
    open_paths = [path for path, connected in connections(manifests, MUST_NOT_CONNECT) if connected]
    assert not open_paths, f"open: {open_paths}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_backing_services_accept_only_app_pods_and_their_own_tools(overlay: str) -> None:
    manifests = render(f"overlays/{overlay}")
    app_pods = {
        w["metadata"]["name"]
        for w in workloads(manifests)
        if w["spec"]["template"]["metadata"]["labels"].get("orderflow.io/tier") == "app"
    }
    assert app_pods == {"api", "relay", "worker", "migrate"}
    policies = list(by_kind(manifests, "NetworkPolicy").values())
    ends = peers(manifests)
    tools = {"postgres": {"gateway"}, "rabbitmq": {"keda", "rabbitmq"}, "redis": set()}
    for backend, port in (("postgres", 5432), ("redis", 6379), ("rabbitmq", 5672)):
        allowed = {n for n, p in ends.items() if connects(policies, p, ends[backend], port)}
        expected = app_pods | tools[backend]
        assert allowed == expected, f"{backend}: {sorted(allowed)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_worker_reaches_the_gateway_and_it_reaches_only_its_ledger_and_the_api(
    overlay: str,
) -> None:
    manifests = render(f"overlays/{overlay}")
    policies = list(by_kind(manifests, "NetworkPolicy").values())
    ends = peers(manifests)
    callers = {
        (name, port)
        for name, peer in ends.items()
        for port in PORTS
        if name != "gateway" and connects(policies, peer, ends["gateway"], port)
    }
    assert callers == {("worker", 8090)}
    reached = {
        (name, port)
        for name, peer in ends.items()
        for port in PORTS
        if name not in ("gateway", "dns") and connects(policies, ends["gateway"], peer, port)
    }
    assert reached == {("postgres", 5432), ("api", 8000)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_public_ingress_routes_neither_metrics_nor_admin(overlay: str) -> None:
    paths = [
        (path["path"], path["pathType"])
        for ingress in by_kind(render(f"overlays/{overlay}"), "Ingress").values()
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert paths, "no public path at all"

    def routed(url: str) -> bool:
        for path, kind in paths:
            if kind == "Exact" and url == path:
                return True
            if kind == "Prefix" and (url == path or url.startswith(path.rstrip("/") + "/")):
                return True
        return False

    for private in ("/metrics", "/admin", "/admin/api/snapshot", "/healthz", "/readyz"):
        assert not routed(private), f"{private} is on the public Ingress"
    for public in ("/api/v1/orders", "/api/v1/products/x", "/docs", "/openapi.json"):
        assert routed(public), f"{public} is not routed"

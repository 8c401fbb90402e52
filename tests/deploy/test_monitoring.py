"""Prometheus configuration and rules pass promtool; dashboards and alerts use real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import DEPLOY, K8S, ROOT, load_yaml, run, tool

PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "orderflow.json"
K8S_MONITORING = K8S / "base" / "monitoring"
CONFIGS = (PROMETHEUS / "prometheus.yml", K8S_MONITORING / "prometheus.yml")

# Kubernetes reads these copies; Compose mounts the originals.
COPIES = {
    K8S_MONITORING / "alerts.yml": PROMETHEUS / "alerts.yml",
    K8S_MONITORING / "alertmanager.yml": DEPLOY / "alertmanager" / "alertmanager.yml",
    K8S_MONITORING / "orderflow-dashboard.json": DASHBOARD,
    K8S_MONITORING / "grafana-datasource.yml": GRAFANA / "provisioning/datasources/prometheus.yml",
    K8S_MONITORING / "grafana-dashboards.yml": GRAFANA / "provisioning/dashboards/orderflow.yml",
}

# Alerts no fault of tests/stack raises, their promtool tests only: more than 500 messages
# waiting and growing, and a handler retrying a tenth of its deliveries for minutes, cost more
# stack-test time than they prove beyond their unit tests.
PROMTOOL_ONLY = {"OrderflowQueueDepthGrowing", "OrderflowHandlerRetriesHigh"}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMQL_WORDS = {
    "sum", "rate", "increase", "by", "without", "on", "and", "or", "unless", "histogram_quantile",
    "clamp_min", "max", "min", "avg", "deriv", "absent", "le", "bool", "ignoring", "group_left",
    "vector",
}  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_prometheus_config_passes_promtool(config: Path) -> None:
    result = run(tool("promtool"), "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_promtool() -> None:
    result = run(tool("promtool"), "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_the_series_they_watch() -> None:
    result = run(tool("promtool"), "test", "rules", str(PROMETHEUS / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("copy", COPIES, ids=lambda p: p.name)
def test_kubernetes_monitoring_files_are_copies_of_the_originals(copy: Path) -> None:
    original = COPIES[copy]
    assert copy.read_bytes() == original.read_bytes(), (
        f"{copy.relative_to(ROOT)} differs from {original.relative_to(ROOT)}: "
        f"cp {original.relative_to(ROOT)} {copy.relative_to(ROOT)}"
    )


def test_every_alert_has_a_severity_and_a_description() -> None:
    rules = [r for g in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    names = {rule["alert"] for rule in rules}
    documented = set(re.findall(r"`(Orderflow\w+)`", (ROOT / "docs/observability.md").read_text()))
    assert names == documented, f"docs/observability.md alert table differs: {names ^ documented}"


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [p for p in panels if p["type"] != "row"]


def test_dashboard_is_valid_and_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = load_yaml(GRAFANA / "provisioning/datasources/prometheus.yml")["datasources"][0]
    assert dashboard["uid"]
    panels = dashboard_panels()
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]
    provider = load_yaml(GRAFANA / "provisioning/dashboards/orderflow.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_covers_what_operators_need() -> None:
    exprs = " ".join(t["expr"] for p in dashboard_panels() for t in p["targets"])
    for metric in (
        "orderflow_http_requests_total",
        "orderflow_http_request_duration_seconds_bucket",
        "orderflow_orders_placed_total",
        "orderflow_events_published_total",
        "orderflow_events_consumed_total",
        "orderflow_events_retried_total",
        "orderflow_events_dead_lettered_total",
        "orderflow_event_lag_seconds_bucket",
        "rabbitmq_queue_messages_ready",
    ):
        assert metric in exprs, f"no panel shows {metric}"


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (labels, functions and strings removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", "", expr)  # numbers
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and not w.startswith("__")}


def metrics_in_code() -> set[str]:
    text = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.py"))
    constructor = r"\b(?:Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*[\"'](orderflow_\w+)[\"']"
    return set(re.findall(constructor, text))


def metrics_documented() -> set[str]:
    text = (ROOT / "docs/observability.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", section, flags=re.MULTILINE))


def all_queries() -> dict[str, str]:
    queries = {f"panel {p['title']!r}": t["expr"] for p in dashboard_panels() for t in p["targets"]}
    for group in load_yaml(PROMETHEUS / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            queries[f"alert {rule['alert']}"] = rule["expr"]
    return queries


def test_panels_and_alerts_use_only_known_metrics() -> None:
    known = metrics_in_code() | metrics_documented()
    unknown = {}
    for where, expr in all_queries().items():
        for name in metric_names(expr):
            base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
            if name not in known and base not in known:
                unknown[where] = name
    assert not unknown, f"metrics neither in the code nor in docs/observability.md: {unknown}"


def test_every_metric_the_code_defines_is_documented() -> None:
    missing = metrics_in_code() - metrics_documented()
    assert not missing, f"add these to the table in docs/observability.md: {sorted(missing)}"


def test_metric_name_extraction_ignores_labels_and_functions() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(orderflow_x_bucket{route!="/m"}[5m])))'
        ' / on() up{job=~"orderflow-.*"} > 1e-9'
    )
    assert metric_names(expr) == {"orderflow_x_bucket", "up"}


def test_metrics_in_code_finds_the_api_metrics() -> None:
    assert {"orderflow_http_requests_total", "orderflow_orders_placed_total"} <= metrics_in_code()


def test_every_alert_links_a_runbook_that_exists() -> None:
    rules = [r for g in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]]
    for rule in rules:
        url = rule["annotations"].get("runbook_url", "")
        assert url == f"docs/runbooks/{rule['alert']}.md", rule["alert"]
        page = (ROOT / url).read_text()
        assert page.startswith(f"# {rule['alert']} ({rule['labels']['severity']})")
    pages = {p.stem for p in (ROOT / "docs/runbooks").glob("Orderflow*.md")}
    assert pages == {r["alert"] for r in rules}, "a runbook for an alert that no longer exists"


def test_work_queue_selectors_match_real_queue_names_only() -> None:
    """Queue names as a running stack has them (tests/stack checks the live ones)."""
    work = re.compile(r"orderflow\.[^.]+\.[^.]+")  # the selector of alerts.yml, anchored
    text = (PROMETHEUS / "alerts.yml").read_text()
    assert 'queue=~"orderflow\\\\.[^.]+\\\\.[^.]+"' in text
    assert work.fullmatch("orderflow.payments.charge")
    assert work.fullmatch("orderflow.orders.mark_paid")
    for other in (
        "orderflow.dead-letters",
        "orderflow.payments.charge.delay",
        "orderflow.payments.charge.retry.1000ms",
    ):
        assert not work.fullmatch(other), other


def test_every_alert_is_raised_on_the_stack_or_left_to_promtool_by_name() -> None:
    rules = {r["alert"] for g in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]}
    stack_tests = "\n".join(p.read_text() for p in (ROOT / "tests/stack").glob("test_*.py"))
    raised = set(re.findall(r'"(Orderflow[A-Za-z0-9]+)"', stack_tests))
    assert rules - raised == PROMTOOL_ONLY, "a new alert needs its fault in tests/stack"
    assert raised <= rules, f"tests/stack names alerts that do not exist: {raised - rules}"

"""Each process's /metrics shows its own metrics only, and counters start at 0."""

from __future__ import annotations

from prometheus_client import Counter, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from orderflow.entrypoints.worker import OUTCOMES, start_counters_at_zero
from orderflow.observability import metrics


def families(process: str) -> set[str]:
    page = generate_latest(metrics.ProcessRegistry(process)).decode()
    return {line.split()[2] for line in page.splitlines() if line.startswith("# TYPE")}


def test_each_process_exports_its_own_metrics_and_not_the_others() -> None:
    api, relay, worker = families("api"), families("relay"), families("worker")
    assert "orderflow_http_requests_total" in api
    assert "orderflow_http_requests_total" not in relay | worker
    assert "orderflow_events_published_total" in relay
    assert "orderflow_events_published_total" not in api | worker
    assert {"orderflow_events_consumed_total", "orderflow_outbox_backlog"} <= worker
    assert "orderflow_events_consumed_total" not in api | relay
    # the runtime's own figures everywhere
    assert all("python_info" in f for f in (api, relay, worker))


def test_every_metric_the_code_defines_is_exported_by_some_process() -> None:
    defined = {
        name
        for name, value in vars(metrics).items()
        if name.isupper() and isinstance(value, MetricWrapperBase)
    }
    exported = {
        name
        for name, value in vars(metrics).items()
        for own in metrics.PROCESS_METRICS.values()
        if any(value is c for c in own)
    }
    assert defined <= exported, f"in no process's /metrics: {sorted(defined - exported)}"


def test_delivery_counters_exist_at_zero_for_every_handler_and_outcome() -> None:
    start_counters_at_zero(["test.zero_handler"])
    page = generate_latest(metrics.ProcessRegistry("worker")).decode()
    for outcome in OUTCOMES:
        labels = f'handler="test.zero_handler",outcome="{outcome}"'
        line = f"orderflow_events_consumed_total{{{labels}}} 0.0"
        assert line in page
    assert 'orderflow_events_dead_lettered_total{handler="test.zero_handler"} 0.0' in page
    assert 'orderflow_events_retried_total{handler="test.zero_handler"} 0.0' in page


def test_start_at_zero_creates_every_combination() -> None:
    counter = Counter("test_zero_total", "a counter", ["a", "b"], registry=None)
    metrics.start_at_zero(counter, ["x", "y"], ["1", "2", "3"])
    samples = [s for m in counter.collect() for s in m.samples if s.name.endswith("_total")]
    assert len(samples) == 6
    assert all(s.value == 0 for s in samples)

"""The alerts test_stack_alerts.py does not raise, each on a fault of its own, followed from
Prometheus through Alertmanager to the test's webhook receiver.

Runs after test_stack_alerts.py on the same stack (two workers); the same rules apply: each fault
starts with its alerts resolved and ends with the stack repaired and its orders delivered.
OrderflowEventLagHigh is raised by the relay's outage (test_stack_alerts.py). Not raised on the
stack, their promtool tests only (deploy/prometheus/alerts.test.yml): OrderflowQueueDepthGrowing
(more than 500 messages waiting) and OrderflowHandlerRetriesHigh.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx
import pytest

from tests.stack import alerting
from tests.stack.shop import place, status, up_targets, wait_terminal
from tests.stack.stack import Stack, wait_for

pytestmark = pytest.mark.stack

EXCHANGE = "orderflow.events"
# payment.initiated has one subscriber: unbound, the relay gets it back from the broker.
LONELY_EVENT = "payment.initiated"
ITS_QUEUE = "orderflow.payments.charge"
SLOW_REQUESTS = 30


def test_the_api_gone_pages(stack: Stack, catalogue: dict[str, str]) -> None:
    alerts = {"OrderflowApiDown"}
    since = alerting.quiet(stack, alerts)
    stack.compose("stop", "--timeout", "10", "api")
    try:
        alerting.wait_fired(stack, alerts, since=since, timeout=60)
    finally:
        stack.compose("up", "--detach", "--wait", "--no-build", "--no-deps", "api")
    order = place(stack, catalogue)
    assert wait_terminal(stack, [order]) == {order: "delivered"}
    alerting.wait_resolved(stack, alerts, timeout=60)


def readiness(stack: Stack) -> dict[str, object]:
    response = stack.http.get(stack.url("api", "/readyz"))
    assert response.status_code == 200, response.text  # degraded, never out of service
    return dict(response.json())


def test_redis_down_degrades_the_api_and_opens_a_ticket(
    stack: Stack, catalogue: dict[str, str]
) -> None:
    alerts = {"OrderflowApiDegraded"}
    since = alerting.quiet(stack, alerts)
    stack.compose("stop", "--timeout", "10", "redis")
    try:
        ready = readiness(stack)  # also what sets orderflow_dependency_up (so does the probe)
        assert ready["status"] == "degraded", ready
        assert ready["checks"] == {"database": "ok", "broker": "ok", "redis": "down"}, ready
        order = place(stack, catalogue)  # still accepted
        alerting.wait_fired(stack, alerts, since=since, timeout=60)
        fired = stack.query('ALERTS{alertname="OrderflowApiDegraded",alertstate="firing"}')
        assert {r["metric"]["dependency"] for r in fired} == {"redis"}
    finally:
        stack.compose("up", "--detach", "--wait", "--no-build", "--no-deps", "redis")
    wait_for("the api ready again", lambda: readiness(stack)["status"] == "ready", timeout=30)
    assert wait_terminal(stack, [order]) == {order: "delivered"}
    alerting.wait_resolved(stack, alerts, timeout=60)


def test_workers_that_stop_answering_page(stack: Stack, catalogue: dict[str, str]) -> None:
    # Paused, the workers stay discovered (their scrapes fail: up == 0, not absent); their
    # consumers go once the broker misses their heartbeats (seconds), the messages stay.
    alerts = {"OrderflowTargetDown", "OrderflowWorkerNotConsuming"}
    since = alerting.quiet(stack, alerts)
    workers = up_targets(stack)["orderflow-worker"]
    waiting: list[str] = []
    stack.compose("pause", "worker")
    try:
        waiting += [place(stack, catalogue) for _ in range(3)]
        # WorkerNotConsuming waits for the last consumed sample to leave its 1-minute window.
        alerting.wait_fired(stack, alerts, since=since, timeout=150)
        down = stack.query('ALERTS{alertname="OrderflowTargetDown",alertstate="firing"}')
        assert {r["metric"]["job"] for r in down} == {"orderflow-worker"}
        assert len(down) == workers
        assert {status(stack, order) for order in waiting} == {"created"}
    finally:
        stack.compose("unpause", "worker")
    assert set(wait_terminal(stack, waiting).values()) == {"delivered"}
    alerting.wait_resolved(stack, alerts, timeout=90)


def test_a_broken_invariant_pages(stack: Stack) -> None:
    alerts = {"OrderflowInvariantViolated"}
    since = alerting.quiet(stack, alerts)
    product = stack.api(
        "POST",
        "/api/v1/products",
        json={"sku": f"audit-{uuid.uuid4().hex[:8]}", "name": "Jug", "price": 900, "stock": 5},
    )
    assert product.status_code == 201, product.text
    product_id = product.json()["id"]

    def set_stock(stock: int) -> None:  # behind the ledger's back: what the audit is for
        sql = f"UPDATE products SET stock = {stock} WHERE id = '{product_id}'"
        stack.compose(
            "exec", "-T", "postgres", "psql", "-U", "orderflow", "-d", "orderflow",
            "-v", "ON_ERROR_STOP=1", "-c", sql,
        )  # fmt: skip

    set_stock(6)
    try:
        alerting.wait_fired(stack, alerts, since=since, timeout=60)
        fired = stack.query('ALERTS{alertname="OrderflowInvariantViolated",alertstate="firing"}')
        assert {r["metric"]["check"] for r in fired} == {"stock_ledger"}
        logged = stack.compose("logs", "--no-color", "worker").split("\n")
        assert any("invariant_violated" in line and product_id in line for line in logged)
    finally:
        set_stock(5)
    alerting.wait_resolved(stack, alerts, timeout=60)


def test_a_frozen_database_makes_the_api_slow(stack: Stack, catalogue: dict[str, str]) -> None:
    # More than 1% of the last 5 minutes' requests slower than a second: the p99 says so. The
    # alert looks back 5 minutes, so it stays on after the repair.
    alerts = {"OrderflowApiHighLatencyP99"}
    since = alerting.quiet(stack, alerts)
    order = place(stack, catalogue)
    with ThreadPoolExecutor(max_workers=SLOW_REQUESTS) as pool:
        stack.compose("pause", "postgres")
        try:
            asked = [
                pool.submit(stack.api, "GET", f"/api/v1/orders/{order}")
                for _ in range(SLOW_REQUESTS)
            ]
            time.sleep(3)
        finally:
            stack.compose("unpause", "postgres")
        answers = [future.result().status_code for future in asked]
    assert answers == [200] * SLOW_REQUESTS, answers  # slow, not failed
    alerting.wait_fired(stack, alerts, since=since, timeout=60)
    assert wait_terminal(stack, [order]) == {order: "delivered"}


def management(stack: Stack, method: str, path: str) -> httpx.Response:
    """A call to the stack's RabbitMQ management API (vhost /)."""
    return stack.http.request(
        method,
        stack.url("rabbitmq", f"/api/{path}"),
        auth=("orderflow", stack.passwords["rabbitmq"]),
    )


def test_events_without_a_bound_queue_page(stack: Stack, catalogue: dict[str, str]) -> None:
    # Last: the alert looks back 10 minutes, so it stays on after the repair.
    alerts = {"OrderflowEventsUnroutable"}
    since = alerting.quiet(stack, alerts)
    binding = f"bindings/%2F/e/{EXCHANGE}/q/{ITS_QUEUE}"
    keys = [b["properties_key"] for b in management(stack, "GET", binding).json()]
    assert LONELY_EVENT in keys, keys
    removed = management(stack, "DELETE", f"{binding}/{quote(LONELY_EVENT, safe='')}")
    assert removed.status_code == 204, removed.text
    try:
        order = place(stack, catalogue)
        alerting.wait_fired(stack, alerts, since=since, timeout=60)
        logged = stack.compose("logs", "--no-color", "relay").split("\n")
        assert any("relay_unroutable" in line and LONELY_EVENT in line for line in logged)
    finally:
        # The runbook's repair: `orderflow migrate` declares the topology again.
        stack.compose("exec", "-T", "api", "orderflow", "migrate")
    keys = [b["properties_key"] for b in management(stack, "GET", binding).json()]
    assert LONELY_EVENT in keys, keys
    # The relay held the returned event and publishes it now: the order goes on.
    assert wait_terminal(stack, [order]) == {order: "delivered"}

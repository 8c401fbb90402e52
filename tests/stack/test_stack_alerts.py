"""Every alert proven on the running stack: silent while healthy, then each fault raised for real
and its alert followed from Prometheus through Alertmanager to the test's webhook receiver.

Runs after test_stack.py on the same stack (two workers). The healthy run comes first; each
fault starts with its alerts resolved and ends with the stack repaired and its orders
delivered, so the next fault starts healthy. The stack's Prometheus evaluates every 2 s and
every ``for:`` is cut to a few seconds (tests/stack/stack.py); expressions, thresholds and
windows are production's. Faults touch only the stack's own containers.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
import yaml

from tests.stack import alerting
from tests.stack.shop import place, status, up_targets, wait_terminal
from tests.stack.stack import DEPLOY, Stack, wait_for

pytestmark = pytest.mark.stack

HEALTHY_S = 120
BACKLOG_ORDERS = 30
LAG = {"OrderflowEventLagHigh"}  # looks back 5 minutes: stays on after the relay's repair
# A work queue whose handler only sends notifications: a bad message there harms no order.
WORK_QUEUE = "orderflow.notifications.send"
# A series selector in a rule's expression: a metric name with its label matchers, if any.
SELECTOR = re.compile(r"\b(?:(?:orderflow|rabbitmq)_[a-z0-9_]+|up)(?:\{[^}]*\})?")


def test_a_healthy_run_of_two_minutes_fires_no_alert(
    stack: Stack, catalogue: dict[str, str]
) -> None:
    orders = [place(stack, catalogue) for _ in range(3)]
    while time.time() - stack.quiet_since < HEALTHY_S:  # what test_stack.py did counts too
        orders.append(place(stack, catalogue))
        time.sleep(2)
    assert set(wait_terminal(stack, orders).values()) == {"delivered"}
    assert alerting.fired_between(stack, stack.quiet_since, time.time()) == {}
    assert stack.receiver.firing_since(stack.quiet_mark) == set()


def test_all_workers_stopped_with_orders_waiting_pages(
    stack: Stack, catalogue: dict[str, str]
) -> None:
    # OrderflowWorkerNotConsuming waits for 5 minutes without a delivery (the rate window keeps
    # the stopped workers' last samples that long): these two say it first.
    alerts = {"OrderflowWorkerDown", "OrderflowQueueWithoutConsumers"}
    since = alerting.quiet(stack, alerts)
    workers = up_targets(stack)["orderflow-worker"]
    waiting: list[str] = []
    stack.compose("stop", "--timeout", "10", "worker")
    try:
        waiting += [place(stack, catalogue) for _ in range(3)]
        alerting.wait_fired(stack, alerts, since=since, timeout=90)
        assert {status(stack, order) for order in waiting} == {"created"}
    finally:
        stack.compose("start", "worker")
    wait_for(
        "the workers back in Prometheus",
        lambda: up_targets(stack).get("orderflow-worker") == workers,
        timeout=60,
    )
    assert set(wait_terminal(stack, waiting).values()) == {"delivered"}
    alerting.wait_resolved(stack, alerts, timeout=60)


def test_the_relay_stopped_with_an_outbox_backlog_pages(
    stack: Stack, catalogue: dict[str, str]
) -> None:
    alerts = {"OrderflowRelayDown", "OrderflowOutboxBacklog"}
    since = alerting.quiet(stack, alerts | LAG)
    waiting: list[str] = []
    stack.compose("stop", "--timeout", "10", "relay")
    try:
        # Enough orders for their late events to be more than the slowest 1% of the last
        # 5 minutes' deliveries (OrderflowEventLagHigh, below).
        waiting += [place(stack, catalogue) for _ in range(BACKLOG_ORDERS)]
        # The backlog alert needs the oldest unpublished event older than 30 s.
        alerting.wait_fired(stack, alerts, since=since, timeout=120)
        backlog = stack.query("max(orderflow_outbox_backlog)")
        assert float(backlog[0]["value"][1]) >= len(waiting), backlog
    finally:
        stack.compose("start", "relay")
    # Published at last, the backlog's events reach their handlers more than 30 s after their
    # commit: the event lag's p99 says so.
    alerting.wait_fired(stack, LAG, since=since, timeout=60)
    assert set(wait_terminal(stack, waiting).values()) == {"delivered"}
    alerting.wait_resolved(stack, alerts, timeout=60)


def test_an_order_past_its_deadline_is_overdue(stack: Stack, catalogue: dict[str, str]) -> None:
    alerts = {"OrderflowOrdersOverdue"}
    since = alerting.quiet(stack, alerts)
    unpaid = place(stack, catalogue, token=None)  # awaits the customer's payment: 15 s here
    try:
        wait_for(
            "the order to await payment",
            lambda: status(stack, unpaid) == "awaiting_payment",
            timeout=30,
        )
        alerting.wait_fired(stack, alerts, since=since, timeout=90)
        labels = stack.query('ALERTS{alertname="OrderflowOrdersOverdue",alertstate="firing"}')
        assert {r["metric"]["status"] for r in labels} == {"awaiting_payment"}
    finally:
        paid = stack.api(
            "POST", f"/api/v1/orders/{unpaid}/pay", json={"payment_token": "pm_approve"}
        )
    assert paid.status_code == 200, paid.text
    assert wait_terminal(stack, [unpaid]) == {unpaid: "delivered"}
    alerting.wait_resolved(stack, alerts, timeout=60)


def test_a_dead_lettered_message_raises_a_ticket(stack: Stack) -> None:
    alerts = {"OrderflowDeadLettersGrowing"}
    since = alerting.quiet(stack, alerts)
    message_id = f"stack-test-{uuid.uuid4().hex[:8]}"
    published = stack.http.post(
        stack.url("rabbitmq", "/api/exchanges/%2F/amq.default/publish"),
        auth=("orderflow", stack.passwords["rabbitmq"]),
        json={
            "routing_key": WORK_QUEUE,
            "payload": "not an envelope",
            "payload_encoding": "string",
            "properties": {"message_id": message_id},
        },
    )
    assert published.status_code == 200, published.text
    assert published.json() == {"routed": True}
    alerting.wait_fired(stack, alerts, since=since, timeout=60)
    logged = stack.compose("logs", "--no-color", "worker").splitlines()
    lines = [line for line in logged if message_id in line]
    assert lines, "no worker log line names the dead-lettered message"
    assert "delivery_dead_lettered" in lines[0]
    assert "invalid_envelope" in lines[0]
    # The runbook's repair; the alert itself looks back 15 minutes, so it stays on meanwhile.
    stack.compose(
        "exec", "-T", "api", "orderflow", "dead-letters", "discard", "--all",
        "--reason", "invalid envelope", "--why", "stack test: a deliberately invalid message",
    )  # fmt: skip


def test_an_api_error_burst_pages(stack: Stack, catalogue: dict[str, str]) -> None:
    alerts = {"OrderflowApiHighErrorRate"}
    since = alerting.quiet(stack, alerts)
    answers: list[int] = []
    began = time.time()
    stack.compose("stop", "--timeout", "10", "postgres")
    try:
        # Over several scrapes: the first sample of a new 5xx series is not an increase yet.
        until = time.monotonic() + 12
        while time.monotonic() < until:
            answers.append(stack.api("GET", f"/api/v1/orders/{uuid.uuid4()}").status_code)
            time.sleep(0.2)
    finally:
        stack.compose("up", "--detach", "--wait", "--no-build", "--no-deps", "postgres")
    assert sum(code >= 500 for code in answers) > len(answers) / 2, answers
    alerting.wait_fired(stack, alerts, since=since, timeout=60)
    # Prometheus's record of a window shows what fired in it (the healthy run relies on it).
    assert alerts <= set(alerting.fired_between(stack, began, time.time()))
    # Repaired: the API takes orders again and they go all the way.
    order = wait_for("an order accepted again", lambda: try_place(stack, catalogue), timeout=60)
    assert wait_terminal(stack, [order]) == {order: "delivered"}


def try_place(stack: Stack, catalogue: dict[str, str]) -> str | None:
    """An order's id, or None while the API cannot take it yet."""
    body = {
        "customer_id": catalogue["customer"],
        "lines": [{"product_id": catalogue["product"], "quantity": 1}],
        "payment_token": "pm_approve",
    }
    response = stack.api("POST", "/api/v1/orders", json=body)
    return str(response.json()["id"]) if response.status_code == 201 else None


def test_every_selector_of_every_alert_rule_matches_live_series(stack: Stack) -> None:
    # Last: after the faults, the series that only an error creates (5xx) exist too.
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    selectors = {
        found.group(0)
        for group in rules["groups"]
        for rule in group["rules"]
        for found in SELECTOR.finditer(rule["expr"])
    }
    assert len(selectors) >= 15, selectors
    assert sorted(s for s in selectors if not stack.query(f"count({s})")) == []

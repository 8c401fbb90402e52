"""The whole system under Docker Compose, as `make stack` runs it, asked real questions.

Builds every image locally (no registry), starts the stack, then walks what an operator
relies on, in order: the first admin key, orders reaching `delivered` through the containerised
API, scaling the workers, Prometheus scraping every process. The Docker engine and Compose v2
are installed and started when missing (scripts/ensure-docker.sh); nothing here is skipped.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.stack.shop import place, up_targets, wait_terminal
from tests.stack.stack import DEPLOY, Stack, wait_for

pytestmark = pytest.mark.stack

WORK_QUEUES = r"orderflow\\.[^.]+\\.[^.]+"  # as PromQL reads it: orderflow.<capability>.<step>


def test_the_first_admin_key_is_created_inside_the_stack(
    stack: Stack, catalogue: dict[str, str]
) -> None:
    assert stack.admin_key.startswith("ofk_")
    me = stack.api("GET", "/api/v1/products")
    assert me.status_code == 200


def test_orders_placed_through_the_containerised_api_are_delivered(
    stack: Stack, catalogue: dict[str, str]
) -> None:
    orders = [place(stack, catalogue) for _ in range(5)]
    assert wait_terminal(stack, orders) == dict.fromkeys(orders, "delivered")
    timeline = stack.api("GET", f"/api/v1/orders/{orders[0]}").json()["timeline"]
    assert [step["event"] for step in timeline][-1] == "order.delivered"


def least_consumers(stack: Stack) -> int:
    """The fewest consumers any work queue has now, as RabbitMQ reports them."""
    found = stack.query(f'min(rabbitmq_queue_consumers{{queue=~"{WORK_QUEUES}"}})')
    return int(float(found[0]["value"][1])) if found else 0


def test_workers_scale_to_two_and_both_consume(stack: Stack, catalogue: dict[str, str]) -> None:
    alone = least_consumers(stack)
    assert alone > 0
    stack.compose("up", "--detach", "--wait", "--no-build", "--scale", "worker=2", "worker")
    wait_for(
        "two worker targets up in Prometheus",
        lambda: up_targets(stack).get("orderflow-worker") == 2,
        timeout=60,
    )
    # Serving /metrics comes before consuming: wait for the new worker on every work queue.
    wait_for(
        "the second worker consuming every work queue",
        lambda: least_consumers(stack) >= 2 * alone,
        timeout=60,
    )
    orders = [place(stack, catalogue) for _ in range(20)]
    assert set(wait_terminal(stack, orders).values()) == {"delivered"}

    # Both replicas took part: each exports its own consumed counter (read at the next scrape).
    def per_worker() -> list[float] | None:
        found = stack.query(
            'sum by (instance) (orderflow_events_consumed_total{job="orderflow-worker"})'
        )
        counts = [float(r["value"][1]) for r in found]
        return counts if len(counts) == 2 and min(counts) > 0 else None

    wait_for("both workers to have consumed", per_worker, timeout=20)


def test_prometheus_scrapes_every_target(stack: Stack) -> None:
    def all_up() -> dict[str, int] | None:
        targets = stack.http.get(stack.url("prometheus", "/api/v1/targets")).json()
        active = targets["data"]["activeTargets"]
        return None if any(t["health"] != "up" for t in active) else up_targets(stack)

    jobs = wait_for("every target up", all_up, timeout=60)
    assert jobs == {
        "orderflow-api": 1,
        "orderflow-relay": 1,
        "orderflow-worker": 2,
        "rabbitmq": 1,
        "alertmanager": 1,
        "prometheus": 1,
    }


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "orderflow.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_dashboard_panel_query_returns_data(stack: Stack, catalogue: dict[str, str]) -> None:
    for _ in range(5):  # fresh traffic inside every rate window
        place(stack, catalogue)
    assert stack.api("GET", f"/api/v1/orders/{uuid.uuid4()}").status_code == 404

    def empty() -> list[str] | None:
        missing = [f"{title}: {expr}" for title, expr in panel_queries() if not stack.query(expr)]
        return None if missing else []

    try:
        wait_for("every panel's query to return data", empty, timeout=60, every=3)
    except pytest.fail.Exception:
        missing = [f"{title}: {expr}" for title, expr in panel_queries() if not stack.query(expr)]
        pytest.fail(f"panels without data: {missing}")

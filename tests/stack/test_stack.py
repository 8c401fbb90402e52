"""The whole system under Docker Compose, as `make stack` runs it, asked real questions.

Builds every image locally (no registry), starts the stack, then walks what an operator
relies on, in order: the first admin key, orders reaching `delivered` through the containerised
API, scaling the workers, Prometheus scraping every process. The Docker engine and Compose v2
are installed and started when missing (scripts/ensure-docker.sh); nothing here is skipped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack.stack import (
    DEPLOY,
    PYTHON,
    ROOT,
    AlertReceiver,
    Stack,
    sh,
    start,
    wait_for,
    write_stack_files,
)

pytestmark = pytest.mark.stack

TERMINAL = {"delivered", "cancelled"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sh(str(ROOT / "scripts" / "ensure-docker.sh"), env={"PYTHON": PYTHON})
    sh(str(DEPLOY / "docker" / "build-images.sh"), env={"PYTHON": PYTHON}, timeout=1800)
    workdir: Path = tmp_path_factory.mktemp("stack")
    workdir.chmod(0o755)  # the containers read their configuration from here
    faster = {
        # the worker's watches every 2 s instead of 15, and an order awaiting payment is
        # overdue after 15 s (the overdue fault); everything else is production's
        "ORDERFLOW_SYSTEM_WATCH_INTERVAL_S": "2",
        "ORDERFLOW_SLA_WATCH_INTERVAL_S": "2",
        "ORDERFLOW_SLA_DEADLINES_S": json.dumps({"awaiting_payment": 15}),
    }
    yield from start(write_stack_files(workdir, AlertReceiver(), extra_env=faster))


@pytest.fixture(scope="module")
def catalogue(stack: Stack) -> dict[str, str]:
    """A product and a customer, created through the API with the first admin key."""
    output = stack.compose("exec", "-T", "api", "orderflow", "keys", "create", "--role", "admin")
    stack.admin_key = output.strip().splitlines()[-1]
    product = stack.api(
        "POST",
        "/api/v1/products",
        json={
            "sku": f"stack-{uuid.uuid4().hex[:8]}",
            "name": "Mug",
            "price": 1250,
            "stock": 10_000,
        },
    )
    assert product.status_code == 201, product.text
    customer = stack.api(
        "POST",
        "/api/v1/customers",
        json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "name": "Ada"},
    )
    assert customer.status_code == 201, customer.text
    return {"product": product.json()["id"], "customer": customer.json()["id"]}


def place(stack: Stack, catalogue: dict[str, str], *, token: str | None = "pm_approve") -> str:
    body: dict[str, object] = {
        "customer_id": catalogue["customer"],
        "lines": [{"product_id": catalogue["product"], "quantity": 1}],
    }
    if token:
        body["payment_token"] = token
    response = stack.api("POST", "/api/v1/orders", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def status(stack: Stack, order_id: str) -> str:
    response = stack.api("GET", f"/api/v1/orders/{order_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def wait_terminal(stack: Stack, order_ids: list[str], timeout: float = 90) -> dict[str, str]:
    def all_done() -> dict[str, str] | None:
        statuses = {order_id: status(stack, order_id) for order_id in order_ids}
        return statuses if set(statuses.values()) <= TERMINAL else None

    return wait_for("orders to reach a terminal status", all_done, timeout=timeout)


def up_targets(stack: Stack) -> dict[str, int]:
    """Healthy scrape targets per job."""
    counts: dict[str, int] = {}
    for result in stack.query("up == 1"):
        job = result["metric"]["job"]
        counts[job] = counts.get(job, 0) + 1
    return counts


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


def test_workers_scale_to_two_and_both_consume(stack: Stack, catalogue: dict[str, str]) -> None:
    stack.compose("up", "--detach", "--wait", "--no-build", "--scale", "worker=2", "worker")
    wait_for(
        "two worker targets up in Prometheus",
        lambda: up_targets(stack).get("orderflow-worker") == 2,
        timeout=60,
    )
    orders = [place(stack, catalogue) for _ in range(20)]
    assert set(wait_terminal(stack, orders).values()) == {"delivered"}
    # Both replicas took part: each exports its own consumed counter.
    per_worker = stack.query(
        'sum by (instance) (orderflow_events_consumed_total{job="orderflow-worker"})'
    )
    assert len(per_worker) == 2
    assert all(float(r["value"][1]) > 0 for r in per_worker), per_worker


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

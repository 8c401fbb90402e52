"""Orders through the containerised API, as a client of the stack would place and follow them."""

from __future__ import annotations

import uuid

from tests.stack.stack import Stack, wait_for

TERMINAL = {"delivered", "cancelled"}


def create_catalogue(stack: Stack) -> dict[str, str]:
    """The first admin key (created inside the stack), then a product and a customer."""
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
    """One order of one mug; without a token it awaits the customer's payment."""
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
    """Wait until every order is delivered or cancelled; their statuses."""

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

"""One structured log line per request, with a request id that the answer carries back."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import httpx
import structlog.testing

from tests.factories import make_customer, make_product


def _lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "http_request"]


async def test_each_request_logs_one_line_with_its_id_route_status_key_and_order(
    client: httpx.AsyncClient,
) -> None:
    product = await make_product(client, price=400)
    customer = await make_customer(client)
    body = {"customer_id": customer["id"], "lines": [{"product_id": product["id"], "quantity": 1}]}
    with structlog.testing.capture_logs() as logs:
        placed = await client.post("/api/v1/orders", json=body, headers={"X-Request-ID": "req-1"})
        order_id = placed.json()["id"]
        read = await client.get(f"/api/v1/orders/{order_id}")
        missing = await client.get("/api/v1/orders/not-a-uuid")
        await client.get("/metrics")  # scrapes and probes are not logged
    assert placed.status_code == 201
    assert placed.headers["x-request-id"] == "req-1"  # the caller's id comes back
    assert placed.headers["location"] == f"/api/v1/orders/{order_id}"
    assert len(read.headers["x-request-id"]) == 32  # a new one otherwise
    post, get, bad = _lines(logs)
    assert post["request_id"] == "req-1"
    assert (post["method"], post["route"], post["status"]) == ("POST", "/api/v1/orders", 201)
    assert post["order_id"] == order_id  # the order it created
    token = client.headers["authorization"].split()[1]
    assert post["key_prefix"] is not None
    assert str(post["key_prefix"]) in token
    assert token not in str(post)  # the secret never
    assert isinstance(post["duration_ms"], float)
    assert (get["route"], get["status"], get["order_id"]) == (
        "/api/v1/orders/{order_id}",
        200,
        order_id,
    )
    assert get["request_id"] == read.headers["x-request-id"]
    assert bad["status"] == missing.status_code == 422


async def test_a_malformed_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/products", headers={"X-Request-ID": "bad id\\n" * 20})
    assert response.headers["x-request-id"] != "bad id\\n" * 20
    assert len(response.headers["x-request-id"]) == 32

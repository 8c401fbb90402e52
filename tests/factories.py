"""Small builders for test data, through the public API or the service layer."""

from __future__ import annotations

import uuid
from typing import Any

import httpx


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def make_product(
    client: httpx.AsyncClient, *, price: int = 1250, stock: int = 100, **extra: Any
) -> dict[str, Any]:
    body = {
        "sku": unique("SKU"),
        "name": extra.pop("name", "Test product"),
        "price": price,
        "stock": stock,
        **extra,
    }
    response = await client.post("/api/v1/products", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def make_customer(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/customers", json={"email": f"{unique('c')}@example.com", "name": "Test"}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def place_order(
    client: httpx.AsyncClient,
    *,
    customer_id: str,
    lines: list[tuple[str, int]],
    payment_token: str | None = "pm_approve",
    expect: int = 201,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "lines": [{"product_id": pid, "quantity": qty} for pid, qty in lines],
    }
    if payment_token is not None:
        body["payment_token"] = payment_token
    response = await client.post("/api/v1/orders", json=body)
    assert response.status_code == expect, response.text
    return dict(response.json())


async def make_customer_with_key(
    client: httpx.AsyncClient, client_for: Any
) -> tuple[dict[str, Any], httpx.AsyncClient]:
    """A new customer (created by the admin ``client``) and a client holding their own key."""
    customer = await make_customer(client)
    return customer, await client_for("customer", customer["id"])

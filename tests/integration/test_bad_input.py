"""Every bad input gets a 4xx problem+json and leaves every table unchanged."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from orderflow.domain.access import Role
from tests.factories import make_customer, make_product
from tests.integration.conftest import ClientFor
from tests.integration.tables import snapshot


@pytest.fixture
async def known(client: httpx.AsyncClient) -> dict[str, str]:
    product = await make_product(client)
    customer = await make_customer(client)
    return {"product": product["id"], "customer": customer["id"]}


def _order(known: dict[str, str], lines: Any) -> dict[str, Any]:
    return {"customer_id": known["customer"], "lines": lines, "payment_token": "pm_approve"}


CASES: dict[str, tuple[Any, int, str]] = {
    # name: (body builder, expected status, expected problem type suffix)
    "empty order": (lambda k: _order(k, []), 422, "validation-error"),
    "quantity zero": (
        lambda k: _order(k, [{"product_id": k["product"], "quantity": 0}]),
        422,
        "validation-error",
    ),
    "negative quantity": (
        lambda k: _order(k, [{"product_id": k["product"], "quantity": -3}]),
        422,
        "validation-error",
    ),
    "absurd quantity": (
        lambda k: _order(k, [{"product_id": k["product"], "quantity": 10**12}]),
        422,
        "validation-error",
    ),
    "quantity as text": (
        lambda k: _order(k, [{"product_id": k["product"], "quantity": "two"}]),
        422,
        "validation-error",
    ),
    "quantity as boolean": (
        lambda k: _order(k, [{"product_id": k["product"], "quantity": True}]),
        422,
        "validation-error",
    ),
    "quantity as numeric text": (
        lambda k: _order(k, [{"product_id": k["product"], "quantity": "2"}]),
        422,
        "validation-error",
    ),
    "unknown product": (
        lambda k: _order(
            k,
            [
                {"product_id": k["product"], "quantity": 1},
                {"product_id": "00000000-0000-4000-8000-000000000001", "quantity": 1},
            ],
        ),
        422,
        "unknown-products",
    ),
    "duplicate product": (
        lambda k: _order(
            k,
            [
                {"product_id": k["product"], "quantity": 1},
                {"product_id": k["product"], "quantity": 2},
            ],
        ),
        422,
        "duplicate-products",
    ),
    "unknown customer": (
        lambda k: {
            **_order(k, [{"product_id": k["product"], "quantity": 1}]),
            "customer_id": str(uuid.uuid4()),
        },
        422,
        "invalid-request",
    ),
    "product id not a uuid": (
        lambda k: _order(k, [{"product_id": "abc", "quantity": 1}]),
        422,
        "validation-error",
    ),
    "lines not a list": (lambda k: _order(k, "lots"), 422, "validation-error"),
    "body is a list": (lambda k: [1, 2], 422, "validation-error"),
    "bad payment token": (
        lambda k: {
            **_order(k, [{"product_id": k["product"], "quantity": 1}]),
            "payment_token": "'; drop table orders",
        },
        422,
        "validation-error",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_bad_order_is_refused_and_changes_nothing(
    case: str, client: httpx.AsyncClient, pool: asyncpg.Pool, known: dict[str, str]
) -> None:
    build, status, kind = CASES[case]
    before = await snapshot(pool)
    response = await client.post("/api/v1/orders", json=build(known))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/" + kind)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert await snapshot(pool) == before


async def test_unknown_products_are_listed(
    client: httpx.AsyncClient, known: dict[str, str]
) -> None:
    ghosts = sorted(str(uuid.uuid4()) for _ in range(2))
    response = await client.post(
        "/api/v1/orders", json=_order(known, [{"product_id": g, "quantity": 1} for g in ghosts])
    )
    assert response.json()["product_ids"] == ghosts


async def test_malformed_json_is_a_400(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    before = await snapshot(pool)
    response = await client.post(
        "/api/v1/orders", content=b'{"lines": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["type"].endswith("/malformed-json")
    assert await snapshot(pool) == before


async def test_oversized_body_is_a_413(
    client: httpx.AsyncClient, pool: asyncpg.Pool, known: dict[str, str]
) -> None:
    before = await snapshot(pool)
    huge = _order(known, [{"product_id": known["product"], "quantity": 1}])
    huge["padding"] = "x" * 200_000
    response = await client.post("/api/v1/orders", json=huge)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert await snapshot(pool) == before


async def test_unknown_order_is_a_404(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/events")):
        response = await client.request(method, f"/api/v1/orders/{uuid.uuid4()}{path}")
        assert response.status_code == 404, (method, path)
        assert response.json()["type"].endswith("/not-found")


async def test_bad_query_parameters_are_422(client: httpx.AsyncClient) -> None:
    for path in (
        "/api/v1/orders?status=teleported",
        "/api/v1/orders?cursor=%%%",
        "/api/v1/products?limit=0",
        "/api/v1/products?sort=colour",
        "/api/v1/orders/not-a-uuid",
    ):
        response = await client.get(path)
        assert response.status_code == 422, path
        assert response.headers["content-type"] == "application/problem+json"


async def test_bad_product_inputs_are_refused(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    before = await snapshot(pool)
    for body in (
        {"sku": "A", "name": "n", "price": -1, "stock": 1},
        {"sku": "A", "name": "n", "price": 1.5, "stock": 1},
        {"sku": "A", "name": "", "price": 1, "stock": 1},
        {"sku": "A", "name": "n", "price": 1, "stock": -2},
        {"sku": "A", "name": "n", "price": 10**20, "stock": 1},
        {"name": "n", "price": 1, "stock": 1},
        {"sku": "A", "name": "n", "price": True, "stock": 1},
        {"sku": "A", "name": "n", "price": "12", "stock": 1},
        {"sku": "A", "name": "n", "price": 1, "stock": False},
    ):
        response = await client.post("/api/v1/products", json=body)
        assert response.status_code == 422, body
    assert await snapshot(pool) == before


async def test_nul_characters_are_a_422_not_a_500(
    client: httpx.AsyncClient, pool: asyncpg.Pool, known: dict[str, str]
) -> None:
    # PostgreSQL text cannot hold U+0000; it used to surface as a 500 from the database.
    placed = await client.post(
        "/api/v1/orders", json=_order(known, [{"product_id": known["product"], "quantity": 1}])
    )
    assert placed.status_code == 201
    order = placed.json()["id"]
    before = await snapshot(pool)
    product = known["product"]
    for method, path, body in (
        ("POST", "/api/v1/products", {"sku": "NUL-1", "name": "a\x00b", "price": 1, "stock": 1}),
        (
            "POST",
            "/api/v1/products",
            {"sku": "NUL-2", "name": "ok", "description": "\x00", "price": 1, "stock": 1},
        ),
        ("PATCH", f"/api/v1/products/{product}", {"name": "\x00"}),
        ("PATCH", f"/api/v1/products/{product}", {"description": "x\x00"}),
        ("PATCH", f"/api/v1/products/{product}", {"price": True}),
        ("POST", "/api/v1/customers", {"email": "nul@example.com", "name": "Nu\x00l"}),
        ("POST", f"/api/v1/orders/{order}/cancel", {"reason": "oops\x00"}),
        ("POST", f"/api/v1/orders/{order}/ship", {"carrier": "D\x00HL"}),
        ("GET", "/api/v1/products?q=%00", None),
        ("GET", "/api/v1/orders?cursor=%00", None),
    ):
        response = await client.request(method, path, json=body)
        assert response.status_code == 422, (method, path, body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert await snapshot(pool) == before


def _list_cursor(at: str) -> str:
    """A listing cursor as the API encodes them, around an instant of our choosing."""
    return base64.urlsafe_b64encode(f"{at}|{uuid.uuid4()}".encode()).decode()


@pytest.mark.parametrize(
    "path",
    [
        # Valid ISO 8601, but year 0 or year 10000 once converted to UTC.
        "/api/v1/orders?created_from=0001-01-01T00:00:00%2B23:59",
        "/api/v1/orders?created_to=9999-12-31T23:59:59-23:59",
        "/api/v1/orders?created_from=0001-01-01T00:00:00%2B00:01",
        # One past a bigint.
        "/api/v1/orders/{order}/events?cursor=9223372036854775808",
        "/api/v1/orders/{order}/events?cursor=99999999999999999999999999",
        "/api/v1/orders?cursor=" + _list_cursor("0001-01-01T00:00:00+23:59"),
        "/api/v1/orders?cursor=" + _list_cursor("9999-12-31T23:59:59-23:59"),
    ],
)
async def test_values_postgresql_cannot_hold_are_a_422_not_a_500(
    path: str, client_for: ClientFor, pool: asyncpg.Pool, known: dict[str, str]
) -> None:
    customer = await client_for(Role.CUSTOMER, known["customer"])  # a customer key is enough
    placed = await customer.post(
        "/api/v1/orders", json={"lines": [{"product_id": known["product"], "quantity": 1}]}
    )
    assert placed.status_code == 201, placed.text
    before = await snapshot(pool)
    response = await customer.get(path.format(order=placed.json()["id"]))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await snapshot(pool) == before


async def test_the_edges_of_what_postgresql_holds_are_accepted(
    client: httpx.AsyncClient, known: dict[str, str]
) -> None:
    placed = await client.post(
        "/api/v1/orders", json=_order(known, [{"product_id": known["product"], "quantity": 1}])
    )
    order = placed.json()["id"]
    for path in (
        "/api/v1/orders?created_from=0001-01-01T00:00:00Z&created_to=9999-12-31T23:59:59Z",
        "/api/v1/orders?created_from=0001-01-01T00:00:00-23:59",  # later than year 1 in UTC
        "/api/v1/orders?created_from=2020-01-01T00:00:00",  # naive: taken as UTC
        f"/api/v1/orders/{order}/events?cursor=9223372036854775807",
    ):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
    listed = await client.get("/api/v1/orders?created_from=2020-01-01T00:00:00&limit=200")
    assert order in {o["id"] for o in listed.json()["items"]}

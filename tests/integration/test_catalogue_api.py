from __future__ import annotations

import uuid

import httpx

from tests.factories import make_customer, make_product, place_order, unique


async def test_product_is_created_read_updated_and_deleted(client: httpx.AsyncClient) -> None:
    product = await make_product(client, price=1250, stock=40)
    assert product["currency"] == "EUR"
    got = await client.get(f"/api/v1/products/{product['id']}")
    assert got.json()["sku"] == product["sku"]

    patched = await client.patch(
        f"/api/v1/products/{product['id']}", json={"price": 1490, "stock": 55}
    )
    assert patched.status_code == 200
    assert (patched.json()["price"], patched.json()["stock"]) == (1490, 55)
    assert patched.json()["version"] == 2

    deleted = await client.delete(f"/api/v1/products/{product['id']}")
    assert deleted.status_code == 204
    gone = await client.get(f"/api/v1/products/{product['id']}")
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"


async def test_duplicate_sku_is_a_conflict(client: httpx.AsyncClient) -> None:
    product = await make_product(client)
    again = await client.post(
        "/api/v1/products", json={"sku": product["sku"], "name": "x", "price": 1, "stock": 1}
    )
    assert again.status_code == 409
    assert again.json()["status"] == 409


async def test_product_referenced_by_an_order_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    refused = await client.delete(f"/api/v1/products/{product['id']}")
    assert refused.status_code == 409
    assert (await client.get(f"/api/v1/products/{product['id']}")).status_code == 200


async def test_listing_filters_sorts_and_pages(client: httpx.AsyncClient) -> None:
    tag = unique("lamp").lower()
    for price, stock in ((300, 0), (100, 5), (200, 7)):
        await make_product(client, price=price, stock=stock, name=f"Desk {tag} {price}")
    page = (
        await client.get(
            "/api/v1/products", params={"q": tag, "sort": "price", "order": "desc", "limit": 2}
        )
    ).json()
    assert [p["price"] for p in page["items"]] == [300, 200]
    assert page["total"] == 3
    assert page["next_offset"] == 2
    rest = (
        await client.get(
            "/api/v1/products",
            params={"q": tag, "sort": "price", "order": "desc", "limit": 2, "offset": 2},
        )
    ).json()
    assert [p["price"] for p in rest["items"]] == [100]
    assert rest["next_offset"] is None

    in_stock = (
        await client.get(
            "/api/v1/products",
            params={"q": tag, "in_stock": "true", "min_price": 150, "max_price": 250},
        )
    ).json()
    assert [p["price"] for p in in_stock["items"]] == [200]


async def test_customer_is_created_and_read(client: httpx.AsyncClient) -> None:
    customer = await make_customer(client)
    got = await client.get(f"/api/v1/customers/{customer['id']}")
    assert got.json()["email"] == customer["email"]
    dup = await client.post(
        "/api/v1/customers", json={"email": customer["email"].upper(), "name": "Dup"}
    )
    assert dup.status_code == 409
    missing = await client.get(f"/api/v1/customers/{uuid.uuid4()}")
    assert missing.status_code == 404

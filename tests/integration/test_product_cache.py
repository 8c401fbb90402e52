"""The Redis read-through product cache: hits, and invalidation on every change."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import orjson
import redis.asyncio as redis
from prometheus_client import REGISTRY

from orderflow.settings import Settings
from tests.factories import make_customer, make_product, place_order


def _count(result: str) -> float:
    return REGISTRY.get_sample_value("orderflow_product_cache_total", {"result": result}) or 0.0


async def _cached(settings: Settings, product_id: str) -> bytes | None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        value = await client.get(f"{settings.redis_key_prefix}:product:{product_id}")
        assert value is None or isinstance(value, bytes)
        return value
    finally:
        await client.aclose()


async def test_second_read_is_a_cache_hit(client: httpx.AsyncClient, settings: Settings) -> None:
    product = await make_product(client, price=1250)
    path = f"/api/v1/products/{product['id']}"
    misses, hits = _count("miss"), _count("hit")
    first = await client.get(path)
    assert await _cached(settings, product["id"]) is not None
    second = await client.get(path)
    assert first.json() == second.json() == {**product}
    assert (_count("miss"), _count("hit")) == (misses + 1, hits + 1)


async def test_update_invalidates_at_once(client: httpx.AsyncClient, settings: Settings) -> None:
    product = await make_product(client, price=1250)
    path = f"/api/v1/products/{product['id']}"
    await client.get(path)
    await client.get(path)  # cached now
    assert (await client.patch(path, json={"price": 990})).status_code == 200
    assert await _cached(settings, product["id"]) == b"-"  # tombstone, not the old row
    after = await client.get(path)
    assert after.json()["price"] == 990
    assert after.json()["version"] == 2
    # and the order is charged the new price, read from PostgreSQL in its transaction
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    assert order["total"] == 990


async def test_delete_invalidates_at_once(client: httpx.AsyncClient) -> None:
    product = await make_product(client)
    path = f"/api/v1/products/{product['id']}"
    await client.get(path)
    await client.get(path)
    assert (await client.delete(path)).status_code == 204
    gone = await client.get(path)
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"


async def test_unknown_products_are_not_cached(client: httpx.AsyncClient) -> None:
    missing = f"/api/v1/products/{uuid.uuid4()}"
    assert (await client.get(missing)).status_code == 404
    assert (await client.get(missing)).status_code == 404


async def test_placement_prices_from_the_cache_and_fills_it(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    product = await make_product(client, price=700)
    customer = await make_customer(client)
    misses = _count("miss")
    await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    assert _count("miss") == misses + 1
    assert await _cached(settings, product["id"]) is not None  # filled by the placement
    hits, local = _count("hit"), _count("local")
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 2)])
    # Priced from the API process's own copy: Redis is not asked again.
    assert (_count("hit"), _count("local")) == (hits, local + 1)
    assert order["total"] == 1400


async def test_a_price_changed_by_another_process_is_charged_despite_the_local_copy(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """Another API process changed the price (and cleared Redis): this process's copy is
    stale, the statement that stores the order sees the new version, and it is priced again."""
    product = await make_product(client, price=1000)
    customer = await make_customer(client)
    await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    await pool.execute(
        "UPDATE products SET price = 1200, version = version + 1 WHERE id = $1",
        uuid.UUID(product["id"]),
    )
    local = _count("local")
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    assert _count("local") == local + 1  # it did price from the stale copy first
    assert order["total"] == 1200
    again = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 3)])
    assert again["total"] == 3600


async def test_a_stale_cached_price_is_never_charged(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool
) -> None:
    """The cache missed a change (say Redis was down when it happened): the statement that
    stores the order sees the product's new version, writes nothing, and the order is priced
    again from PostgreSQL."""
    product = await make_product(client, price=1000)
    other = await make_product(client, price=300)
    customer = await make_customer(client)
    path = f"/api/v1/products/{product['id']}"
    await client.get(path)
    await client.get(f"/api/v1/products/{other['id']}")
    stale = await _cached(settings, product["id"])
    assert stale is not None
    assert orjson.loads(stale)["price"] == 1000
    await pool.execute(
        "UPDATE products SET price = 1500, version = version + 1 WHERE id = $1",
        uuid.UUID(product["id"]),
    )
    order = await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 2), (other["id"], 1)]
    )
    assert order["total"] == 2 * 1500 + 300
    assert [line["unit_price"] for line in order["lines"]] == [1500, 300]
    stored = await pool.fetch(
        "SELECT unit_price FROM order_lines WHERE order_id = $1 ORDER BY line_no",
        uuid.UUID(order["id"]),
    )
    assert [r["unit_price"] for r in stored] == [1500, 300]
    outbox = await pool.fetch(
        "SELECT envelope FROM outbox WHERE order_id = $1", uuid.UUID(order["id"])
    )
    assert len(outbox) == 1
    assert outbox[0]["envelope"]["payload"]["total"] == 3300
    assert await _cached(settings, product["id"]) == b"-"  # the stale row was dropped
    assert (await client.get(path)).json()["price"] == 1500

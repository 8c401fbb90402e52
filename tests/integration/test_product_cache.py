"""The Redis read-through product cache: hits, and invalidation on every change."""

from __future__ import annotations

import uuid

import httpx
import redis.asyncio as redis
from prometheus_client import REGISTRY

from orderflow.settings import Settings
from tests.factories import make_customer, make_product, place_order


def _count(result: str) -> float:
    return REGISTRY.get_sample_value("orderflow_product_cache_total", {"result": result}) or 0.0


async def _cached(settings: Settings, product_id: str) -> bytes | None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        value: bytes | None = await client.get(f"{settings.redis_key_prefix}:product:{product_id}")
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

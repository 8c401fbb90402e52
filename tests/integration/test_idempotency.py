"""Idempotency keys: replay, mismatch, in-flight conflict, concurrency, expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from orderflow.entrypoints.api.app import create_app
from orderflow.kernel.idempotency import prune
from orderflow.settings import Settings
from tests.factories import make_customer, make_customer_with_key, make_product
from tests.integration.conftest import ClientFor, running


async def _order_body(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    product = await make_product(client, price=300)
    customer = await make_customer(client)
    return {
        "customer_id": customer["id"],
        "lines": [{"product_id": product["id"], "quantity": 2}],
        **extra,
    }


async def _orders_of(pool: asyncpg.Pool, customer_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM orders WHERE customer_id = $1", uuid.UUID(customer_id)
    )
    return count


async def test_same_key_and_body_replays_the_first_response_and_creates_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    body = await _order_body(client, payment_token="pm_approve")
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = await client.post("/api/v1/orders", json=body, headers=key)
    assert first.status_code == 201
    # the same JSON with other key order and spacing is the same request
    again = await client.post(
        "/api/v1/orders",
        content=(
            f'{{ "lines": [{{"quantity": 2, "product_id": "{body["lines"][0]["product_id"]}"}}],'
            f' "payment_token": "pm_approve", "customer_id": "{body["customer_id"]}" }}'
        ),
        headers={**key, "content-type": "application/json"},
    )
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/json"
    assert await _orders_of(pool, body["customer_id"]) == 1
    outbox = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE order_id = $1", uuid.UUID(first.json()["id"])
    )
    assert outbox == 1
    # without a key, the same body is a new order
    assert (await client.post("/api/v1/orders", json=body)).status_code == 201
    assert await _orders_of(pool, body["customer_id"]) == 2


async def test_same_key_with_another_body_is_422_and_changes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    body = await _order_body(client)
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    assert (await client.post("/api/v1/orders", json=body, headers=key)).status_code == 201
    changed = {**body, "lines": [{**body["lines"][0], "quantity": 3}]}
    refused = await client.post("/api/v1/orders", json=changed, headers=key)
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/idempotency-key-reused")
    assert await _orders_of(pool, body["customer_id"]) == 1


async def test_keys_are_scoped_to_the_caller(
    client: httpx.AsyncClient, client_for: ClientFor, pool: asyncpg.Pool
) -> None:
    product = await make_product(client)
    body = {"lines": [{"product_id": product["id"], "quantity": 1}]}
    key = {"Idempotency-Key": "same-key-for-everyone"}
    alice, as_alice = await make_customer_with_key(client, client_for)
    bob, as_bob = await make_customer_with_key(client, client_for)
    a = await as_alice.post("/api/v1/orders", json=body, headers=key)
    b = await as_bob.post("/api/v1/orders", json=body, headers=key)
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]
    assert (await _orders_of(pool, alice["id"]), await _orders_of(pool, bob["id"])) == (1, 1)


async def test_a_duplicate_while_the_first_is_in_flight_is_409(
    client: httpx.AsyncClient,
    app_settings: Callable[..., Settings],
    pool: asyncpg.Pool,
) -> None:
    body = await _order_body(client)
    key = f"order-{uuid.uuid4()}"
    admin_token = client.headers["Authorization"].split()[1]
    async with running(create_app(app_settings(idempotency_wait_s=0.3))) as transport:
        http = httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            headers={"Authorization": f"Bearer {admin_token}", "Idempotency-Key": key},
        )
        # Play the first request: claim the key in a transaction that is still open.
        scope = await pool.fetchval(
            "SELECT 'key:' || id FROM api_keys WHERE prefix = $1", admin_token.split("_")[1]
        )
        async with pool.acquire() as conn:
            first = conn.transaction()
            await first.start()
            await conn.execute(
                "INSERT INTO idempotency_keys (scope, key, request_hash, expires_at) "
                "VALUES ($1, $2, '\\x00', now() + interval '1 hour')",
                scope,
                key,
            )
            duplicate = await http.post("/api/v1/orders", json=body)
            assert duplicate.status_code == 409
            assert duplicate.json()["type"].endswith("/request-in-flight")
            await first.rollback()
        # the "first" request rolled back: the key is free and the request goes through
        retried = await http.post("/api/v1/orders", json=body)
        assert retried.status_code == 201, retried.text
    assert await _orders_of(pool, body["customer_id"]) == 1


async def test_fifty_concurrent_duplicates_make_one_order_and_get_one_answer(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    body = await _order_body(client)
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    responses = await asyncio.gather(
        *(client.post("/api/v1/orders", json=body, headers=key) for _ in range(50))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.content for r in responses if "idempotent-replayed" in r.headers}) == 1
    assert await _orders_of(pool, body["customer_id"]) == 1


async def test_cancel_is_idempotent_too(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    body = await _order_body(client)
    order = (await client.post("/api/v1/orders", json=body)).json()
    key = {"Idempotency-Key": f"cancel-{uuid.uuid4()}"}
    path = f"/api/v1/orders/{order['id']}/cancel"
    first = await client.post(path, json={"reason": "changed my mind"}, headers=key)
    second = await client.post(path, json={"reason": "changed my mind"}, headers=key)
    assert (first.status_code, second.status_code) == (200, 200)  # not 409: a replay
    assert second.json() == first.json()
    assert first.json()["status"] == "cancelled"
    assert [t["event"] for t in first.json()["timeline"]] == ["order.created", "order.cancelled"]
    events = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE order_id = $1 AND event_type = 'order.cancelled'",
        uuid.UUID(order["id"]),
    )
    assert events == 1
    without_key = await client.post(path, json={"reason": "changed my mind"})
    assert without_key.status_code == 409  # a second cancel proper is still illegal


async def test_failed_requests_are_not_recorded_so_a_retry_can_succeed(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    body = await _order_body(client)
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    missing = {**body, "customer_id": str(uuid.uuid4())}
    assert (await client.post("/api/v1/orders", json=missing, headers=key)).status_code == 422
    # the failed attempt left no record: the same key may now carry a corrected request
    assert (await client.post("/api/v1/orders", json=body, headers=key)).status_code == 201


async def test_expired_keys_are_pruned_and_may_be_reused(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    body = await _order_body(client)
    key = f"order-{uuid.uuid4()}"
    first = await client.post("/api/v1/orders", json=body, headers={"Idempotency-Key": key})
    await pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1", key
    )
    second = await client.post("/api/v1/orders", json=body, headers={"Idempotency-Key": key})
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]
    await pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1", key
    )
    assert await prune(pool) >= 1
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", key) == 0
    ttl = await pool.fetchval(
        "SELECT extract(epoch FROM expires_at - created_at) FROM idempotency_keys LIMIT 1"
    )
    assert round(ttl) == 24 * 3600


async def test_bad_idempotency_keys_are_422(client: httpx.AsyncClient) -> None:
    body = await _order_body(client)
    for bad in ("", "x" * 256, "has space"):
        response = await client.post("/api/v1/orders", json=body, headers={"Idempotency-Key": bad})
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == "application/problem+json"

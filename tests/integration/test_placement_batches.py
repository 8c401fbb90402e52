"""Orders placed together by one API process are stored by one statement (ADR 0010), and
each is still stored whole or not at all, at the price its products have when it is stored."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from orderflow.catalogue import store as product_rows
from orderflow.catalogue.redis_cache import RedisProductCache
from orderflow.domain.errors import InvalidRequest
from orderflow.domain.model import Order
from orderflow.entrypoints.api.deps import build_pricing
from orderflow.ordering import placement as ordering
from orderflow.ordering.placement_batches import PlacementBatcher
from orderflow.settings import Settings
from tests.factories import make_customer, make_product


@asynccontextmanager
async def product_held(pool: asyncpg.Pool, product_id: str) -> AsyncIterator[None]:
    """Keep every statement that stores an order of this product waiting (a row lock that
    its foreign-key check needs), until the block ends."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("SELECT FROM products WHERE id = $1 FOR UPDATE", uuid.UUID(product_id))
        try:
            yield
        finally:
            await transaction.rollback()


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


@pytest.fixture
def place(pool: asyncpg.Pool, settings: Settings) -> Callable[..., Coroutine[Any, Any, Order]]:
    pricing = build_pricing(settings)

    def call(
        batcher: PlacementBatcher,
        customer_id: str,
        lines: list[tuple[str, int]],
        cache: RedisProductCache | None = None,
    ) -> Coroutine[Any, Any, Order]:
        return ordering.place_order(
            pool,
            customer_id=uuid.UUID(customer_id),
            lines=[ordering.LineRequest(uuid.UUID(p), q) for p, q in lines],
            payment_token="pm_approve",
            pricing=pricing,
            actor="admin",
            cache=cache,
            batcher=batcher,
        )

    return call


async def in_one_batch(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    place: Callable[..., Coroutine[Any, Any, Order]],
    batcher: PlacementBatcher,
    customer_id: str,
    calls: list[Callable[[], Coroutine[Any, Any, Order]]],
) -> tuple[Order, list[Order | BaseException]]:
    """A first order is stored while its product is held, so that every one of ``calls``
    queues behind it: they form the next batch together."""
    blocker = await make_product(client, price=100)
    async with product_held(pool, blocker["id"]):
        first = asyncio.create_task(place(batcher, customer_id, [(blocker["id"], 1)]))
        await until(lambda: batcher.busy and batcher.waiting == 0, "the first is in flight")
        rest = [asyncio.create_task(call()) for call in calls]
        await until(lambda: batcher.waiting == len(calls), "all are queued")
    results = await asyncio.gather(*rest, return_exceptions=True)
    return await first, results


async def stored(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """Per order: its transaction, total, lines, outbox rows and timeline entries."""
    rows = await pool.fetch(
        """
        SELECT o.id, o.xmin::text AS tx, o.total,
               (SELECT count(*) FROM order_lines l WHERE l.order_id = o.id) AS lines,
               (SELECT coalesce(sum(l.line_total), 0) FROM order_lines l
                WHERE l.order_id = o.id) AS lines_total,
               (SELECT count(*) FROM outbox x WHERE x.order_id = o.id
                AND x.event_type = 'order.created') AS events,
               (SELECT count(*) FROM order_timeline t WHERE t.order_id = o.id) AS timeline
        FROM orders o WHERE o.id = ANY($1::uuid[])
        """,
        ids,
    )
    return [dict(r) for r in rows]


async def test_orders_placed_together_share_one_statement_and_each_is_whole(
    client: httpx.AsyncClient, pool: asyncpg.Pool, place: Callable[..., Coroutine[Any, Any, Order]]
) -> None:
    batcher = PlacementBatcher(pool, max_batch=32)
    catalogue = [await make_product(client, price=100 * (i + 1)) for i in range(4)]
    customer = await make_customer(client)
    orders = [
        [(catalogue[i % 4]["id"], 1 + i % 3), (catalogue[(i + 1) % 4]["id"], 1)] for i in range(12)
    ]
    first, results = await in_one_batch(
        client,
        pool,
        place,
        batcher,
        customer["id"],
        [functools.partial(place, batcher, customer["id"], lines) for lines in orders],
    )
    placed = [r for r in results if isinstance(r, Order)]
    assert len(placed) == 12, results
    rows = await stored(pool, [o.id for o in placed])
    assert len(rows) == 12
    assert len({r["tx"] for r in rows}) == 1  # one transaction: one statement, one commit
    assert {r["tx"] for r in rows} != {(await stored(pool, [first.id]))[0]["tx"]}
    by_id = {r["id"]: r for r in rows}
    for order, lines in zip(placed, orders, strict=True):
        row = by_id[order.id]
        expected = sum(
            next(p["price"] for p in catalogue if p["id"] == pid) * qty for pid, qty in lines
        )
        assert order.subtotal == expected
        assert (row["lines"], row["lines_total"], row["events"], row["timeline"]) == (
            2,
            expected,
            1,
            1,
        )


async def test_an_order_priced_from_a_stale_cache_is_priced_again_and_the_rest_are_kept(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    place: Callable[..., Coroutine[Any, Any, Order]],
    product_cache: RedisProductCache,
) -> None:
    batcher = PlacementBatcher(pool, max_batch=32)
    changed = await make_product(client, price=1000)
    steady = await make_product(client, price=300)
    customer = await make_customer(client)
    async with pool.acquire() as conn:
        known = await product_rows.get_many(conn, [uuid.UUID(changed["id"])])
    await product_cache.put_many(known.values())  # the cache will keep the old price
    await pool.execute(
        "UPDATE products SET price = 1500, version = version + 1 WHERE id = $1",
        uuid.UUID(changed["id"]),
    )
    calls = [
        lambda: place(batcher, customer["id"], [(changed["id"], 2)], product_cache),
        *[lambda: place(batcher, customer["id"], [(steady["id"], 1)]) for _ in range(3)],
    ]
    before = await pool.fetchval(
        "SELECT count(*) FROM orders WHERE customer_id = $1", uuid.UUID(customer["id"])
    )
    _, results = await in_one_batch(client, pool, place, batcher, customer["id"], calls)
    placed = [r for r in results if isinstance(r, Order)]
    assert len(placed) == 4, results
    assert placed[0].total == 3000  # the new price, not the cached one
    rows = await stored(pool, [o.id for o in placed])
    assert sorted(r["total"] for r in rows) == [300, 300, 300, 3000]
    assert all((r["events"], r["timeline"]) == (1, 1) for r in rows)
    after = await pool.fetchval(
        "SELECT count(*) FROM orders WHERE customer_id = $1", uuid.UUID(customer["id"])
    )
    assert after - before == 5  # the first, and each of the four once: no duplicate


async def test_an_order_that_breaks_a_constraint_fails_alone_and_its_batch_is_stored(
    client: httpx.AsyncClient, pool: asyncpg.Pool, place: Callable[..., Coroutine[Any, Any, Order]]
) -> None:
    batcher = PlacementBatcher(pool, max_batch=32)
    product = await make_product(client, price=700)
    customer = await make_customer(client)
    nobody = str(uuid.uuid4())
    outbox_before = await pool.fetchval("SELECT count(*) FROM outbox")
    calls = [
        lambda: place(batcher, customer["id"], [(product["id"], 1)]),
        lambda: place(batcher, nobody, [(product["id"], 1)]),
        lambda: place(batcher, customer["id"], [(product["id"], 2)]),
    ]
    _, results = await in_one_batch(client, pool, place, batcher, customer["id"], calls)
    assert isinstance(results[1], InvalidRequest)
    assert "does not exist" in str(results[1])
    good = [r for r in results if isinstance(r, Order)]
    assert sorted(o.total for o in good) == [700, 1400]
    assert (
        await pool.fetchval("SELECT count(*) FROM orders WHERE customer_id = $1", uuid.UUID(nobody))
        == 0
    )
    # the first order and the two good ones: one event each, nothing for the refused one
    assert await pool.fetchval("SELECT count(*) FROM outbox") - outbox_before == 3

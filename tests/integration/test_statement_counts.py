"""How many statements a saga batch costs, counted with asyncpg's query logger: the batching
ADRs' round-trip budgets (0012, 0014, 0015), kept from creeping up."""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from orderflow.kernel.consumer import Outcome, Prepared, apply_batch, prepare
from orderflow.kernel.handlers import (
    CallStep,
    Registry,
)
from tests.factories import make_customer, make_product
from tests.integration.saga_support import (
    _in_transaction,
    _money,
    _paid,
    _payment_initiated,
    _processed,
    _stock,
)


async def test_one_reservation_batch_with_two_orders_for_the_last_unit_reserves_one(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    registry: Registry,
    logged: tuple[asyncpg.Pool, list[str]],
) -> None:
    # The batch locks and reads the stock once: the second order must be checked against
    # what the first left; its reservations are written by one statement, its events by
    # another: four statements in its transaction.
    spec = registry.get("inventory.reserve")
    last, plenty = await make_product(client, stock=1), await make_product(client, stock=10)
    customer = await make_customer(client)
    deliveries = [
        await _paid(client, pool, customer, [(plenty["id"], 2), (last["id"], 1)]) for _ in range(2)
    ]
    order_ids = [d.envelope.order_id for d in deliveries]
    logged_pool, seen = logged
    seen.clear()
    assert await apply_batch(logged_pool, spec, deliveries) == [Outcome.APPLIED] * 2
    statements = _in_transaction(seen)
    assert len(statements) == 4, statements  # claim and lock orders, lock stock, reserve, events
    assert "UPDATE products" in statements[-2]
    assert "INSERT INTO outbox" in statements[-1]
    statuses = [
        await pool.fetchval("SELECT status FROM orders WHERE id = $1", i) for i in order_ids
    ]
    assert statuses == ["reserved", "cancelled"]
    assert (await _stock(client, last), await _stock(client, plenty)) == (0, 8)
    moved = await pool.fetch(
        "SELECT order_id, product_id, quantity FROM stock_movements WHERE order_id = ANY($1)",
        order_ids,
    )
    assert sorted((r["product_id"], r["quantity"]) for r in moved) == sorted(
        [(uuid.UUID(plenty["id"]), -2), (uuid.UUID(last["id"]), -1)]
    )
    assert {r["order_id"] for r in moved} == {order_ids[0]}


async def test_a_charge_batch_settles_its_payments_with_one_statement(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    registry: Registry,
    logged: tuple[asyncpg.Pool, list[str]],
) -> None:
    # The batch's charges, captured and declined, are settled by one statement before its
    # events are written: three statements in its transaction whatever its size.
    spec = registry.get("payments.charge")
    assert isinstance(spec, CallStep)
    made = [
        await _payment_initiated(client, pool, registry, price=100 * (i + 1), token=token)
        for i, token in enumerate(["pm_approve", "pm_decline", "pm_approve"])
    ]
    batch = [delivery for _, delivery in made]
    ready = [await prepare(pool, spec, d) for d in batch]
    logged_pool, seen = logged
    seen.clear()
    outcomes = await apply_batch(
        logged_pool, spec, batch, [r for r in ready if isinstance(r, Prepared)]
    )
    assert outcomes == [Outcome.APPLIED] * 3
    statements = _in_transaction(seen)
    assert len(statements) == 3, statements  # claim and lock, settle, events and statuses
    assert sum("UPDATE payments" in q for q in statements) == 1
    (first, _), (second, _), (third, _) = made
    assert await _money(pool, first["id"]) == {"authorize": 100}
    assert await _money(pool, second["id"]) == {"decline": 200}
    assert await _money(pool, third["id"]) == {"authorize": 300}
    assert [await _processed(pool, o) for o in (first, second, third)] == [1, 0, 1]
    statuses = [
        await pool.fetchval("SELECT status FROM orders WHERE id = $1", uuid.UUID(o["id"]))
        for o, _ in made
    ]
    assert statuses == ["payment_pending", "awaiting_payment", "payment_pending"]

"""What the saga's tests share: the registry, orders brought to a step, the money and stock they
moved, and a pool whose statements are logged."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx

from orderflow.domain.events import (
    Envelope,
    OrderPaid,
    PaymentProcessed,
)
from orderflow.kernel.consumer import apply
from orderflow.kernel.handlers import (
    Delivery,
    Registry,
)
from orderflow.kernel.uow import UnitOfWork
from tests.factories import make_customer, make_product, place_order
from tests.pump import pump


async def _run(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry, order: dict[str, Any]
) -> dict[str, Any]:
    await pump(pool, registry, [uuid.UUID(order["id"])])
    return dict((await client.get(f"/api/v1/orders/{order['id']}")).json())


async def _settled_by_webhook(pool: asyncpg.Pool, order_id: str, timeout_s: float = 10) -> None:
    """Wait for the gateway's webhook to settle the order's pending payment."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await pool.fetchval(
        "SELECT count(*) FROM payments WHERE order_id = $1 AND status = 'pending'",
        uuid.UUID(order_id),
    ):
        assert asyncio.get_running_loop().time() < deadline, "no webhook settled the payment"
        await asyncio.sleep(0.05)


async def _money(pool: asyncpg.Pool, order_id: str) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT kind, sum(amount)::bigint AS amount FROM payment_transactions "
        "WHERE order_id = $1 GROUP BY kind",
        uuid.UUID(order_id),
    )
    return {r["kind"]: r["amount"] for r in rows}


async def _stock(client: httpx.AsyncClient, product: dict[str, Any]) -> int:
    return int((await client.get(f"/api/v1/products/{product['id']}")).json()["stock"])


async def _paid(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    customer: dict[str, Any],
    lines: list[tuple[str, int]],
) -> Delivery:
    """A new order of ``customer`` set to paid, and its order.paid as a delivery."""
    order = await place_order(client, customer_id=customer["id"], lines=lines)
    order_id = uuid.UUID(order["id"])
    await pool.execute("UPDATE orders SET status = 'paid' WHERE id = $1", order_id)
    paid = OrderPaid(payment_id=uuid.uuid4(), amount=order["total"], currency=order["currency"])
    envelope = Envelope.wrap(paid, order_id=order_id)
    return Delivery(envelope=envelope, event=envelope.event())


async def _step_until(
    pool: asyncpg.Pool, registry: Registry, order_id: uuid.UUID, status: str
) -> None:
    """Apply the order's events one at a time until it reaches ``status``."""
    for _ in range(20):
        current = await pool.fetchval("SELECT status FROM orders WHERE id = $1", order_id)
        if current == status:
            return
        row = await pool.fetchrow(
            "UPDATE outbox SET published_at = now() WHERE id = (SELECT id FROM outbox "
            "WHERE order_id = $1 AND published_at IS NULL ORDER BY id LIMIT 1) "
            "RETURNING envelope",
            order_id,
        )
        assert row is not None, f"stuck before {status}"
        envelope = Envelope.model_validate(row["envelope"])
        for spec in registry.subscribers(envelope.type):
            if status == "payment_pending" and spec.name == "payments.charge":
                continue  # leave the charge in flight: it is delivered after the cancel
            await apply(pool, spec, Delivery(envelope, envelope.event(), 1))
    raise AssertionError(f"order never reached {status}")


def _captured(order_id: uuid.UUID) -> Delivery:
    """A payment.processed about ``order_id``, as a delivery."""
    event = PaymentProcessed(
        payment_id=uuid.uuid4(), amount=1, currency="EUR", gateway_reference="ref"
    )
    envelope = Envelope.wrap(event, order_id=order_id)
    return Delivery(envelope=envelope, event=envelope.event())


async def _orders_in(
    client: httpx.AsyncClient, pool: asyncpg.Pool, status: str, count: int
) -> list[uuid.UUID]:
    product = await make_product(client)
    customer = await make_customer(client)
    ids = []
    for _ in range(count):
        order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
        ids.append(uuid.UUID(order["id"]))
    await pool.execute("UPDATE orders SET status = $2 WHERE id = ANY($1)", ids, status)
    return ids


async def _caused(pool: asyncpg.Pool, cause: Delivery) -> list[str]:
    """The events written because of ``cause``, on the timeline and in the outbox."""
    rows = await pool.fetch(
        "SELECT t.event_type FROM order_timeline t JOIN outbox o USING (event_id) "
        "WHERE o.envelope ->> 'causation_id' = $1 ORDER BY t.id",
        str(cause.envelope.event_id),
    )
    return [r["event_type"] for r in rows]


async def _payment_initiated(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    registry: Registry,
    *,
    price: int,
    token: str = "pm_approve",
) -> tuple[dict[str, Any], Delivery]:
    """A new order stepped to payment_pending, and its payment.initiated as a delivery."""
    product = await make_product(client, price=price)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=token
    )
    order_id = uuid.UUID(order["id"])
    await _step_until(pool, registry, order_id, "payment_pending")
    row = await pool.fetchrow(
        "SELECT envelope FROM outbox WHERE order_id = $1 AND event_type = 'payment.initiated'",
        order_id,
    )
    envelope = Envelope.model_validate(row["envelope"])
    return order, Delivery(envelope, envelope.event(), 1)


async def _processed(pool: asyncpg.Pool, order: dict[str, Any]) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM order_timeline WHERE order_id = $1 "
            "AND event_type = 'payment.processed'",
            uuid.UUID(order["id"]),
        )
    )


def _in_transaction(seen: list[str]) -> list[str]:
    """The statements of the one transaction in ``seen``, between its BEGIN and COMMIT."""
    # Leave out the relay wake-ups and asyncpg's own type introspection (once per connection
    # and set of types, with JIT switched off around it).
    queries = [
        q.strip()
        for q in seen
        if not q.startswith("NOTIFY") and "typeinfo_tree" not in q and "'jit'" not in q
    ]
    assert queries.count("BEGIN;") == queries.count("COMMIT;") == 1, queries
    return queries[queries.index("BEGIN;") + 1 : queries.index("COMMIT;")]


async def _lock_orders(uow: UnitOfWork, order_ids: Sequence[uuid.UUID | None]) -> None:
    """Lock these orders as a batch's claim would, for a handler driven by hand."""
    await uow.conn.execute(
        "SELECT 1 FROM orders WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE", order_ids
    )

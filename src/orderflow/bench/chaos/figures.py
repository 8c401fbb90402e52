"""What a chaos run did to the orders, read from the run's database once it has recovered:
accepted orders lost or not terminal, effects duplicated, and when the system moved again after
each fault.

An effect that happened twice shows in the rows it left: a second authorization, capture,
void or refund of one order (``payment_transactions``; the gateway's own ledger is read by
``chaos.gateway``), a second stock movement of one kind for one order and
product, a second notification to one recipient of one event of an order, a second timeline
entry for an event an order sees once. The inbox's key (event, handler) makes a second inbox
row impossible, so the figures count the effects themselves.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from orderflow.operations import ONCE_PER_ORDER

TERMINAL = ["delivered", "cancelled"]

_LOST = """
SELECT count(*) FROM unnest($1::uuid[]) a(id)
WHERE NOT EXISTS (SELECT FROM orders o WHERE o.id = a.id)
"""
_NOT_TERMINAL = """
SELECT o.id, o.status FROM orders o
WHERE o.id = ANY($1::uuid[]) AND o.status <> ALL($2::text[]) ORDER BY o.id
"""
_BY_STATUS = "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status"
_UNANSWERED = "SELECT count(*) FROM orders WHERE id <> ALL($1::uuid[])"
_PAYMENT_TWICE = """
SELECT coalesce(sum(n - 1), 0)::bigint FROM (
    SELECT count(*) AS n FROM payment_transactions WHERE kind = $1
    GROUP BY order_id HAVING count(*) > 1
) x
"""
_STOCK_TWICE = """
SELECT coalesce(sum(n - 1), 0)::bigint FROM (
    SELECT count(*) AS n FROM stock_movements WHERE order_id IS NOT NULL
    GROUP BY order_id, product_id, kind HAVING count(*) > 1
) x
"""
# The outbox keeps every published event for days (ORDERFLOW_OUTBOX_RETENTION_S): it names the
# type of each notification's event, including those that do not appear on the timeline.
_NOTIFIED_TWICE = """
SELECT coalesce(sum(n - 1), 0)::bigint FROM (
    SELECT count(*) AS n FROM notifications nt JOIN outbox ob ON ob.event_id = nt.event_id
    WHERE ob.event_type = ANY($1::text[])
    GROUP BY nt.order_id, ob.event_type, nt.recipient HAVING count(*) > 1
) x
"""
_APPLIED_TWICE = """
SELECT event_type, sum(n - 1)::bigint AS extra FROM (
    SELECT event_type, count(*) AS n FROM order_timeline WHERE event_type = ANY($1::text[])
    GROUP BY order_id, event_type HAVING count(*) > 1
) x GROUP BY event_type ORDER BY event_type
"""
_SHORT_OF_STOCK = """
SELECT count(DISTINCT order_id) FROM order_timeline WHERE event_type = 'inventory.insufficient'
"""
_SHORT_ORDERS = (
    "SELECT DISTINCT order_id FROM order_timeline WHERE event_type = 'inventory.insufficient'"
)
# A step of the saga: not a placement, nor what a customer or staff did through the API.
_FIRST_PROGRESS = """
SELECT extract(epoch FROM min(recorded_at))::float8 FROM order_timeline
WHERE recorded_at >= to_timestamp($1) AND event_type <> 'order.created'
  AND actor <> ALL('{admin,staff,customer}'::text[])
"""
_OPEN = "SELECT count(*) FROM orders WHERE status <> ALL($1::text[])"
_BACKLOG = "SELECT count(*) FROM outbox WHERE published_at IS NULL"


async def open_work(pool: asyncpg.Pool) -> tuple[int, int]:
    """(orders not terminal, outbox rows not yet published) over the whole database."""
    open_orders = await pool.fetchval(_OPEN, TERMINAL)
    backlog = await pool.fetchval(_BACKLOG)
    return int(open_orders), int(backlog)


async def order_figures(pool: asyncpg.Pool, accepted: list[str]) -> dict[str, Any]:
    """The accepted orders: how many, lost, not terminal (with their statuses); every order
    of the database by status; orders stored that no answer announced."""
    ids = [uuid.UUID(i) for i in accepted]
    not_terminal = await pool.fetch(_NOT_TERMINAL, ids, TERMINAL)
    return {
        "accepted": len(ids),
        "lost": int(await pool.fetchval(_LOST, ids)),
        "not_terminal": len(not_terminal),
        "not_terminal_first": [f"{r['id']} {r['status']}" for r in not_terminal[:10]],
        "by_status": {r["status"]: r["n"] for r in await pool.fetch(_BY_STATUS)},
        "stored_without_2xx": int(await pool.fetchval(_UNANSWERED, ids)),
        "short_of_stock": int(await pool.fetchval(_SHORT_OF_STOCK)),
    }


async def duplicate_figures(pool: asyncpg.Pool) -> dict[str, Any]:
    """Effects applied more than once, over the whole database."""
    once = sorted(ONCE_PER_ORDER)
    applied_twice = {r["event_type"]: r["extra"] for r in await pool.fetch(_APPLIED_TWICE, once)}
    return {
        "authorizations": int(await pool.fetchval(_PAYMENT_TWICE, "authorize")),
        "charges": int(await pool.fetchval(_PAYMENT_TWICE, "capture")),
        "refunds": int(await pool.fetchval(_PAYMENT_TWICE, "refund")),
        "voids": int(await pool.fetchval(_PAYMENT_TWICE, "void")),
        "stock_movements": int(await pool.fetchval(_STOCK_TWICE)),
        "notifications": int(await pool.fetchval(_NOTIFIED_TWICE, once)),
        "events_applied_twice": sum(applied_twice.values()),
        "events_applied_twice_by_type": applied_twice,
    }


async def short_of_stock(pool: asyncpg.Pool) -> set[uuid.UUID]:
    """The orders that were short of stock."""
    rows = await pool.fetch(_SHORT_ORDERS)
    return {r["order_id"] for r in rows}


async def first_progress_after(pool: asyncpg.Pool, wall: float) -> float | None:
    """The wall-clock time of the first saga step (an event no API call wrote) an order took
    at or after ``wall``; None if none did."""
    found = await pool.fetchval(_FIRST_PROGRESS, wall)
    return float(found) if found is not None else None

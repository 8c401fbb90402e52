"""Order queries: read one order, its timeline and carrier, search orders; and the batch
claims that lock or move the orders of a saga step's deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from orderflow.domain.model import Order, TimelineEntry
from orderflow.domain.orders import OrderStatus
from orderflow.kernel import inbox
from orderflow.ordering import rows

_LINE_COLUMNS = "line_no, product_id, sku, name, unit_price, quantity, line_total"
_TIMELINE_COLUMNS = "event_id, event_type, actor, status_after, occurred_at, data"


async def get(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, lock: bool = False, with_details: bool = True
) -> Order | None:
    """Load an order (with lines and timeline unless told not to); ``lock`` takes a row lock."""
    row = await conn.fetchrow(
        f"SELECT {rows.ORDER_COLUMNS} FROM orders WHERE id = $1"
        + (" FOR NO KEY UPDATE" if lock else ""),
        order_id,
    )
    if row is None:
        return None
    if not with_details:
        return rows.order(row)
    lines = await conn.fetch(
        f"SELECT {_LINE_COLUMNS} FROM order_lines WHERE order_id = $1 ORDER BY line_no", order_id
    )
    timeline = await timeline_page(conn, order_id, after=0, limit=1000)
    return rows.order(row, [rows.order_line(r) for r in lines], [e for _, e in timeline])


async def shipping_carrier(conn: asyncpg.Connection, order_id: uuid.UUID) -> str | None:
    """The carrier named by the order's latest ``order.shipped`` event, if it shipped."""
    carrier = await conn.fetchval(
        "SELECT data->>'carrier' FROM order_timeline WHERE order_id = $1 "
        "AND event_type = 'order.shipped' ORDER BY id DESC LIMIT 1",
        order_id,
    )
    return None if carrier is None else str(carrier)


async def timeline_page(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, after: int, limit: int
) -> list[tuple[int, TimelineEntry]]:
    """Timeline entries of an order after position ``after``, oldest first, with positions."""
    records = await conn.fetch(
        f"SELECT id, {_TIMELINE_COLUMNS} FROM order_timeline WHERE order_id = $1 AND id > $2 "
        "ORDER BY id LIMIT $3",
        order_id,
        after,
        limit,
    )
    return [(r["id"], rows.timeline_entry(r)) for r in records]


# The claim of a batch's deliveries in the inbox and the row locks on their orders, in one
# statement: inbox keys first (sorted), then the orders of the events claimed now, in id order
# (so that two batches cannot deadlock). ``id = ANY($3)`` keeps the primary key in the plan.
_LOCK_CLAIMED = f"""
WITH {inbox.claimed_cte(1)}, locked AS MATERIALIZED (
    SELECT {rows.ORDER_COLUMNS} FROM orders
    WHERE id = ANY($3::uuid[]) AND id IN (
        SELECT e.order_id FROM unnest($1::uuid[], $3::uuid[]) AS e(event_id, order_id)
        JOIN claimed c ON c.event_id = e.event_id
    )
    ORDER BY id FOR NO KEY UPDATE
)
SELECT (SELECT array_agg(event_id) FROM claimed) AS claimed, l.*
FROM (VALUES (1)) AS one(x) LEFT JOIN locked l ON TRUE
"""


async def lock_claimed(
    conn: asyncpg.Connection,
    handler: str,
    events: Sequence[tuple[uuid.UUID, uuid.UUID | None]],
) -> tuple[set[uuid.UUID], list[Order]]:
    """Claim these (event id, order id) pairs for ``handler`` and row-lock the orders of those
    claimed now (without lines and timeline); the claimed event ids and the locked orders.
    Inside a transaction; events sorted by id."""
    records = await conn.fetch(
        _LOCK_CLAIMED, [e for e, _ in events], handler, [o for _, o in events]
    )
    locked = [
        rows.order({k: v for k, v in r.items() if k != "claimed"})
        for r in records
        if r["id"] is not None
    ]
    return set(records[0]["claimed"] or ()), locked


async def search(
    conn: asyncpg.Connection,
    *,
    customer_id: uuid.UUID | None,
    status: OrderStatus | None,
    created_from: datetime | None,
    created_to: datetime | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Order]:
    """Newest first, keyset-paged: ``before`` is the (created_at, id) of the last row seen."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if customer_id is not None:
        clauses.append(f"customer_id = {arg(customer_id)}")
    if status is not None:
        clauses.append(f"status = {arg(status.value)}")
    if created_from is not None:
        clauses.append(f"created_at >= {arg(created_from)}")
    if created_to is not None:
        clauses.append(f"created_at < {arg(created_to)}")
    if before is not None:
        clauses.append(f"(created_at, id) < ({arg(before[0])}, {arg(before[1])})")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    records = await conn.fetch(
        f"SELECT {rows.ORDER_COLUMNS} FROM orders {where} "
        f"ORDER BY created_at DESC, id DESC LIMIT {arg(limit)}",
        *args,
    )
    return [rows.order(r) for r in records]

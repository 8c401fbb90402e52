"""Order, order line and timeline queries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from orderflow.adapters.postgres import rows, uow
from orderflow.domain.model import Order, OrderLine, TimelineEntry
from orderflow.domain.orders import OrderStatus
from orderflow.domain.pricing import Quote

_LINE_COLUMNS = "line_no, product_id, sku, name, unit_price, quantity, line_total"
_TIMELINE_COLUMNS = "event_id, event_type, actor, status_after, occurred_at, data"


@dataclass(frozen=True, slots=True)
class NewLine:
    product_id: uuid.UUID
    sku: str
    name: str
    unit_price: int
    quantity: int
    product_version: int  # the product row this line was priced from


async def insert(
    conn: asyncpg.Connection,
    *,
    order_id: uuid.UUID,
    customer_id: uuid.UUID,
    status: OrderStatus,
    currency: str,
    quote: Quote,
    pricing: str,
    payment_token: str | None,
    lines: Sequence[NewLine],
    events: Sequence[uow.Pending],
) -> Order | None:
    """Insert an order, its lines and its ``events`` (outbox, timeline) in one statement.

    Only if every line's product still has the version it was priced from: otherwise nothing
    is written and the answer is None, and the caller prices the order again. A statement is
    atomic on its own, so no explicit transaction is needed around it; and the version check
    inside it is what makes a price read from a cache safe to charge.
    """
    row = await conn.fetchrow(
        f"""
        WITH t AS (
            SELECT * FROM unnest($11::uuid[], $12::int[], $13::int[])
                WITH ORDINALITY AS t(product_id, product_version, quantity, n)
        ), priced AS (
            SELECT t.n, p.id AS product_id, p.sku, p.name, p.price AS unit_price, t.quantity
            FROM t JOIN products p ON p.id = t.product_id AND p.version = t.product_version
            WHERE p.id = ANY($11::uuid[])  -- the primary key, not a scan (see inventory.py)
        ), o AS (
            INSERT INTO orders (id, customer_id, status, currency, subtotal, discount, tax, total,
                                pricing, payment_token)
            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
            WHERE (SELECT count(*) FROM priced) = cardinality($11::uuid[])
            RETURNING {rows.ORDER_COLUMNS}
        ), l AS (
            INSERT INTO order_lines (order_id, line_no, product_id, sku, name, unit_price,
                                     quantity, line_total)
            SELECT o.id, n, product_id, sku, name, unit_price, quantity, unit_price * quantity
            FROM priced, o
        ), {uow.event_ctes(14, when="EXISTS (SELECT FROM o)")}
        SELECT * FROM o
        """,
        order_id,
        customer_id,
        status.value,
        currency,
        quote.subtotal,
        quote.discount,
        quote.tax,
        quote.total,
        pricing,
        payment_token,
        [line.product_id for line in lines],
        [line.product_version for line in lines],
        [line.quantity for line in lines],
        *uow.event_args(events),
    )
    if row is None:
        return None
    order_lines = [
        OrderLine(
            line_no=n,
            product_id=line.product_id,
            sku=line.sku,
            name=line.name,
            unit_price=line.unit_price,
            quantity=line.quantity,
            line_total=line.unit_price * line.quantity,
        )
        for n, line in enumerate(lines, start=1)
    ]
    return rows.order(row, order_lines)


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


async def lock_many(conn: asyncpg.Connection, order_ids: Sequence[uuid.UUID]) -> list[Order]:
    """Row-lock these orders in id order (without lines and timeline); absent ids are skipped."""
    records = await conn.fetch(
        f"SELECT {rows.ORDER_COLUMNS} FROM orders WHERE id = ANY($1::uuid[]) "
        "ORDER BY id FOR NO KEY UPDATE",
        order_ids,
    )
    return [rows.order(r) for r in records]


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

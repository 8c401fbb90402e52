"""Storing priced orders: orders, their lines and their events in one statement."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from orderflow.domain.model import Order, OrderLine
from orderflow.domain.orders import OrderStatus
from orderflow.domain.pricing import Quote
from orderflow.kernel import uow
from orderflow.ordering import rows


@dataclass(frozen=True, slots=True)
class NewLine:
    product_id: uuid.UUID
    sku: str
    name: str
    unit_price: int
    quantity: int
    product_version: int  # the product row this line was priced from


@dataclass(frozen=True, slots=True)
class NewOrder:
    """An order priced and ready to store, with the events to store with it."""

    id: uuid.UUID
    customer_id: uuid.UUID
    status: OrderStatus
    currency: str
    quote: Quote
    pricing: str
    payment_token: str | None
    lines: Sequence[NewLine]
    events: Sequence[uow.Pending]


# Orders arrive as parallel arrays ($1-$11), their lines as parallel arrays keyed by order
# ($12-$16), their events as in ``uow.event_ctes`` (from $17). An order is written only if
# every one of its lines' products still has the version it was priced from; the others are
# left out (not an error) and the caller prices them again.
_INSERT_MANY = f"""
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[],
                         $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::text[],
                         $11::int[])
        AS r(id, customer_id, status, currency, subtotal, discount, tax, total, pricing,
             payment_token, line_count)
), t AS (
    SELECT * FROM unnest($12::uuid[], $13::uuid[], $14::int[], $15::int[], $16::int[])
        AS t(order_id, product_id, product_version, quantity, line_no)
), priced AS (
    SELECT t.order_id, t.line_no, p.id AS product_id, p.sku, p.name, p.price AS unit_price,
           t.quantity
    FROM t JOIN products p ON p.id = t.product_id AND p.version = t.product_version
    WHERE p.id = ANY($13::uuid[])  -- the primary key, not a scan (see inventory.py)
), o AS (
    INSERT INTO orders (id, customer_id, status, currency, subtotal, discount, tax, total,
                        pricing, payment_token)
    SELECT r.id, r.customer_id, r.status, r.currency, r.subtotal, r.discount, r.tax, r.total,
           r.pricing, r.payment_token
    FROM r JOIN (SELECT order_id, count(*) AS n FROM priced GROUP BY order_id) c
        ON c.order_id = r.id AND c.n = r.line_count
    RETURNING {rows.ORDER_COLUMNS}
), l AS (
    INSERT INTO order_lines (order_id, line_no, product_id, sku, name, unit_price, quantity,
                             line_total)
    SELECT o.id, priced.line_no, priced.product_id, priced.sku, priced.name, priced.unit_price,
           priced.quantity, priced.unit_price * priced.quantity
    FROM priced JOIN o ON o.id = priced.order_id
), {uow.event_ctes(17, when="e.order_id IN (SELECT id FROM o)")}
SELECT * FROM o
"""


async def insert_many(
    conn: asyncpg.Connection, new_orders: Sequence[NewOrder]
) -> dict[uuid.UUID, Order]:
    """Insert orders with their lines and events (outbox, timeline) in one statement.

    An order is written only if every line's product still has the version it was priced
    from; the answer holds the orders written, by id, and leaves the others out. A statement
    is atomic on its own, so no explicit transaction is needed around it; and the version
    check inside it is what makes a price read from a cache safe to charge. Several orders in
    one statement share one round trip and one commit (ADR 0010).
    """
    lines = [(o.id, n, line) for o in new_orders for n, line in enumerate(o.lines, start=1)]
    records = await conn.fetch(
        _INSERT_MANY,
        [o.id for o in new_orders],
        [o.customer_id for o in new_orders],
        [o.status.value for o in new_orders],
        [o.currency for o in new_orders],
        [o.quote.subtotal for o in new_orders],
        [o.quote.discount for o in new_orders],
        [o.quote.tax for o in new_orders],
        [o.quote.total for o in new_orders],
        [o.pricing for o in new_orders],
        [o.payment_token for o in new_orders],
        [len(o.lines) for o in new_orders],
        [order_id for order_id, _, _ in lines],
        [line.product_id for _, _, line in lines],
        [line.product_version for _, _, line in lines],
        [line.quantity for _, _, line in lines],
        [n for _, n, _ in lines],
        *uow.event_args([event for o in new_orders for event in o.events]),
    )
    by_id = {o.id: o for o in new_orders}
    return {r["id"]: rows.order(r, _order_lines(by_id[r["id"]].lines)) for r in records}


def _order_lines(lines: Sequence[NewLine]) -> list[OrderLine]:
    return [
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

"""Order, order line and timeline queries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from orderflow.domain.events import Envelope
from orderflow.domain.model import Order, OrderLine, TimelineEntry
from orderflow.domain.orders import OrderStatus
from orderflow.domain.pricing import Quote
from orderflow.kernel import inbox, uow
from orderflow.ordering import rows

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


# A batch of status-only steps in one statement, outside any explicit transaction: the inbox
# claim of the events whose order exists, and for each event claimed now, its order moved
# from the status the step expects to the next one, with the event that records the move.
# The update takes the row lock itself; a concurrent change (a cancel) makes it wait, then
# re-check the expected status on the new row version, so an order that moved meanwhile is
# left alone and no event is written for it. Locks come in the order every batch takes them:
# the inbox keys, sorted, all claimed first (the update reads them as one array), then the
# orders, by id (rows come sorted by order id) (``id = ANY($3)`` keeps the primary key in the
# plan). At most one step per order per statement (``advance_claimed`` splits the rest).
_ORDER_EXISTS = """EXISTS (
    SELECT 1 FROM step s JOIN orders o ON o.id = s.order_id AND o.id = ANY($3::uuid[])
    WHERE s.cause_id = ids.id
)"""
_ADVANCE_CLAIMED = f"""
WITH step AS (
    SELECT * FROM unnest($1::uuid[], $3::uuid[], $4::text[], $5::text[])
        AS s(cause_id, order_id, expected, status)
), {inbox.claimed_cte(1, where=_ORDER_EXISTS)}, moved AS (
    UPDATE orders o SET status = s.status, version = o.version + 1, updated_at = now()
    FROM step s
    WHERE o.id = s.order_id AND o.id = ANY($3::uuid[]) AND o.status = s.expected
      AND s.cause_id = ANY((SELECT array_agg(event_id) FROM claimed)::uuid[])
    RETURNING s.cause_id
), {uow.event_ctes(6, when="(envelope ->> 'causation_id')::uuid IN (SELECT cause_id FROM moved)")}
SELECT (SELECT array_agg(event_id) FROM claimed) AS claimed,
       (SELECT count(*) FROM moved) AS moved,
       (SELECT array_agg(s.cause_id) FROM step s
        WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = s.order_id)) AS missing
"""


@dataclass(frozen=True, slots=True)
class StatusStep:
    """One delivery's step: move ``order_id`` from ``expected`` to the status ``event``
    records, if the order is still in ``expected``."""

    cause_id: uuid.UUID  # the event being applied (its inbox key)
    order_id: uuid.UUID
    expected: OrderStatus
    event: Envelope  # caused by ``cause_id``
    status: OrderStatus


@dataclass(frozen=True, slots=True)
class Advanced:
    claimed: set[uuid.UUID]  # the events claimed now (the others were applied before)
    moved: int  # orders that moved (the others had left the expected status)
    missing: set[uuid.UUID]  # events about an order that does not exist: not claimed


async def advance_claimed(
    pool: asyncpg.Pool, handler: str, steps: Sequence[StatusStep]
) -> Advanced:
    """Apply status-only steps for ``handler``, effectively once: one statement (one round
    trip, no ``BEGIN`` or ``COMMIT``) per batch, or one per step of the same order when a
    batch holds several."""
    rounds: list[dict[uuid.UUID, StatusStep]] = []
    for step in sorted({s.cause_id: s for s in steps}.values(), key=lambda s: s.order_id):
        free = next((r for r in rounds if step.order_id not in r), None)
        if free is None:
            rounds.append(free := {})
        free[step.order_id] = step
    claimed: set[uuid.UUID] = set()
    missing: set[uuid.UUID] = set()
    moved = 0
    for batch in rounds:
        ordered = list(batch.values())
        row = await pool.fetchrow(
            _ADVANCE_CLAIMED,
            [s.cause_id for s in ordered],
            handler,
            [s.order_id for s in ordered],
            [s.expected.value for s in ordered],
            [s.status.value for s in ordered],
            *uow.event_args([(s.event, s.status) for s in ordered]),
        )
        assert row is not None
        claimed.update(row["claimed"] or ())
        missing.update(row["missing"] or ())
        moved += row["moved"]
    return Advanced(claimed, moved, missing)


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

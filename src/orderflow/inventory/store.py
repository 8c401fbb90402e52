"""Stock reservation and release. Rows are locked in product-id order so that concurrent
orders cannot deadlock (invariant 4).

Joins with an ``unnest`` of parameters also filter by ``id = ANY(...)``: a generic plan
guesses ten rows for the ``unnest`` and would otherwise hash-join them against a sequential
scan of the whole table; the ``ANY`` gives it the primary-key index."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Line:
    """One line of an order, with its product's stock when it was locked."""

    order_id: uuid.UUID
    product_id: uuid.UUID
    requested: int
    available: int


async def lock_stock_of(conn: asyncpg.Connection, order_ids: list[uuid.UUID]) -> list[Line]:
    """Lock every product on these orders, in id order, and read their lines against it."""
    rows = await conn.fetch(
        """
        SELECT l.order_id, p.id AS product_id, l.quantity AS requested, p.stock AS available
        FROM products p
        JOIN order_lines l ON l.product_id = p.id AND l.order_id = ANY($1::uuid[])
        WHERE p.id = ANY(ARRAY(
            SELECT l.product_id FROM order_lines l WHERE l.order_id = ANY($1::uuid[])
        ))
        ORDER BY p.id, l.order_id
        FOR NO KEY UPDATE OF p
        """,
        order_ids,
    )
    return [Line(**dict(r)) for r in rows]


async def reserve(conn: asyncpg.Connection, lines: list[Line]) -> None:
    """Take the stock of these lines (of any orders; products locked) and record a 'reserve'
    movement for each, with one statement."""
    await conn.execute(
        """
        WITH reserve_lines AS (
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[])
                AS t(order_id, product_id, quantity)
        ), reserve_totals AS (
            SELECT product_id, sum(quantity) AS quantity FROM reserve_lines GROUP BY product_id
        ), reserve_stock AS (
            UPDATE products p SET stock = p.stock - w.quantity, updated_at = now()
            FROM reserve_totals w WHERE p.id = w.product_id AND p.id = ANY($2::uuid[])
        )
        INSERT INTO stock_movements (product_id, order_id, kind, quantity)
        SELECT product_id, order_id, 'reserve', -quantity FROM reserve_lines
        """,
        [line.order_id for line in lines],
        [line.product_id for line in lines],
        [line.requested for line in lines],
    )


async def release(conn: asyncpg.Connection, order_id: uuid.UUID) -> list[tuple[uuid.UUID, int]]:
    """Return an order's reserved stock once; returns what went back (product, quantity)."""
    held = await conn.fetch(
        """
        SELECT p.id AS product_id, -r.quantity AS quantity
        FROM stock_movements r JOIN products p ON p.id = r.product_id
        WHERE r.order_id = $1 AND r.kind = 'reserve'
          AND NOT EXISTS (SELECT 1 FROM stock_movements x
                          WHERE x.order_id = $1 AND x.product_id = r.product_id
                            AND x.kind = 'release')
        ORDER BY p.id
        FOR NO KEY UPDATE OF p
        """,
        order_id,
    )
    if not held:
        return []
    ids, quantities = [r["product_id"] for r in held], [r["quantity"] for r in held]
    await conn.execute(
        """
        WITH w AS (SELECT * FROM unnest($2::uuid[], $3::int[]) AS t(product_id, quantity)),
        u AS (
            UPDATE products p SET stock = p.stock + w.quantity, updated_at = now()
            FROM w WHERE p.id = w.product_id AND p.id = ANY($2::uuid[])
        )
        INSERT INTO stock_movements (product_id, order_id, kind, quantity)
        SELECT product_id, $1, 'release', quantity FROM w
        """,
        order_id,
        ids,
        quantities,
    )
    return list(zip(ids, quantities, strict=True))

"""Payment attempts and the payment transaction history."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Payment:
    id: uuid.UUID
    order_id: uuid.UUID
    attempt: int
    payment_token: str
    amount: int
    currency: str
    status: str
    gateway_reference: str | None


_COLUMNS = "id, order_id, attempt, payment_token, amount, currency, status, gateway_reference"


async def insert(
    conn: asyncpg.Connection,
    *,
    order_id: uuid.UUID,
    token: str | None,
    amount: int,
    currency: str,
) -> Payment | None:
    """Register the next payment attempt of an order (the order row is locked by the caller).

    A ``token`` becomes the order's payment method; None charges the one stored on the order
    (read by the same statement). None if there is no payment method at all.
    """
    row = await conn.fetchrow(
        f"""
        WITH o AS (UPDATE orders SET payment_token = $3 WHERE id = $2 AND $3::text IS NOT NULL),
        t AS (SELECT coalesce($3::text, (SELECT payment_token FROM orders WHERE id = $2)) AS token)
        INSERT INTO payments (id, order_id, attempt, payment_token, amount, currency, status)
        SELECT $1, $2,
               (SELECT coalesce(max(attempt), 0) + 1 FROM payments WHERE order_id = $2),
               t.token, $4, $5, 'pending'
        FROM t WHERE t.token IS NOT NULL
        RETURNING {_COLUMNS}
        """,
        uuid.uuid4(),
        order_id,
        token,
        amount,
        currency,
    )
    return Payment(**dict(row)) if row else None


async def insert_for(
    conn: asyncpg.Connection, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Payment]:
    """Register the next payment attempt of each of these orders (locked by the caller) for
    its total, charged to the payment method stored on it, in one statement; by order id.
    An order without a payment method gets none."""
    records = await conn.fetch(
        f"""
        INSERT INTO payments (id, order_id, attempt, payment_token, amount, currency, status)
        SELECT n.id, o.id,
               (SELECT coalesce(max(p.attempt), 0) + 1 FROM payments p WHERE p.order_id = o.id),
               o.payment_token, o.total, o.currency, 'pending'
        FROM unnest($1::uuid[], $2::uuid[]) AS n(id, order_id)
        JOIN orders o ON o.id = n.order_id AND o.id = ANY($2::uuid[])  -- the primary key
        WHERE o.payment_token IS NOT NULL
        RETURNING {_COLUMNS}
        """,
        [uuid.uuid4() for _ in order_ids],
        list(order_ids),
    )
    return {row["order_id"]: Payment(**dict(row)) for row in records}


async def get(
    conn: asyncpg.Connection | asyncpg.Pool, payment_id: uuid.UUID, *, lock: bool = False
) -> Payment | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM payments WHERE id = $1" + (" FOR NO KEY UPDATE" if lock else ""),
        payment_id,
    )
    return Payment(**dict(row)) if row else None


async def get_many(
    conn: asyncpg.Connection | asyncpg.Pool, payment_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Payment]:
    """The payments of these ids that exist, by id."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM payments WHERE id = ANY($1)", payment_ids)
    return {row["id"]: Payment(**dict(row)) for row in rows}


async def holding(
    conn: asyncpg.Connection | asyncpg.Pool, order_id: uuid.UUID, *, lock: bool = False
) -> Payment | None:
    """The order's payment that holds money at the gateway (authorized, or captured and not
    refunded), if any."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM payments WHERE order_id = $1 "
        "AND status IN ('authorized', 'captured')" + (" FOR NO KEY UPDATE" if lock else ""),
        order_id,
    )
    return Payment(**dict(row)) if row else None


@dataclass(frozen=True, slots=True)
class Settlement:
    """A payment to move from the status it was read in to ``status``, with its history row."""

    payment: Payment
    status: str
    kind: str
    idempotency_key: str
    reference: str | None
    detail: str = ""


_SETTLE = """
WITH s AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[])
        AS s(id, expected, status, kind, idempotency_key, reference, detail)
), p AS (
    UPDATE payments p SET status = s.status,
           gateway_reference = coalesce(p.gateway_reference, s.reference), updated_at = now()
    FROM s
    WHERE p.id = s.id AND p.id = ANY($1::uuid[]) AND p.status = s.expected
    RETURNING p.id, p.order_id, p.amount, p.currency
), t AS (
    INSERT INTO payment_transactions (payment_id, order_id, kind, amount, currency,
                                      idempotency_key, gateway_reference, detail)
    SELECT p.id, p.order_id, s.kind, p.amount, p.currency, s.idempotency_key, s.reference,
           s.detail
    FROM p JOIN s ON s.id = p.id
)
SELECT id FROM p
"""


async def settle_many(
    conn: asyncpg.Connection, settlements: Sequence[Settlement]
) -> set[uuid.UUID]:
    """Move each payment from the status it was read in to its new status and append the
    matching history row, all in one statement; the ids of the payments moved (one that had
    moved meanwhile is left alone, with nothing written). A payment appears at most once."""
    ids = [s.payment.id for s in settlements]
    if len(set(ids)) != len(ids):
        raise ValueError("a payment can be settled once per statement")
    rows = await conn.fetch(
        _SETTLE,
        ids,
        [s.payment.status for s in settlements],
        [s.status for s in settlements],
        [s.kind for s in settlements],
        [s.idempotency_key for s in settlements],
        [s.reference for s in settlements],
        [s.detail for s in settlements],
    )
    return {row["id"] for row in rows}


async def settle(conn: asyncpg.Connection, settlement: Settlement) -> bool:
    """``settle_many`` of one: whether the payment moved."""
    return bool(await settle_many(conn, [settlement]))

"""Webhook deliveries and their attempts: their SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from orderflow.notifications.webhook_rows import DELIVERY_COLUMNS as _DELIVERY_COLUMNS
from orderflow.notifications.webhook_rows import AttemptRow, DeliveryRow, Due, from_record


async def claim_cursor(conn: asyncpg.Connection) -> int | None:
    """Inside a transaction: lock how far deliveries were made; None if another worker holds
    it (it is making them)."""
    position = await conn.fetchval("SELECT position FROM webhook_cursor FOR UPDATE SKIP LOCKED")
    return int(position) if position is not None else None


async def subscriptions_for_fan_in(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every subscription's matching rule (disabled ones too: their deliveries wait)."""
    return list(await conn.fetch("SELECT id, customer_id, event_types FROM webhook_subscriptions"))


async def add_deliveries(
    conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]], *, cursor: int
) -> None:
    """Store deliveries (id, subscription, order, position, entry id, event type, body) and
    move the cursor, in the caller's transaction."""
    if rows:
        columns = list(zip(*rows, strict=True))
        await conn.execute(
            "INSERT INTO webhook_deliveries (id, subscription_id, order_id, position, entry_id, "
            "event_type, body) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], "
            "$4::bigint[], $5::bigint[], $6::text[], $7::text[]) "
            "ON CONFLICT (subscription_id, entry_id) DO NOTHING",
            *[list(c) for c in columns],
        )
    await conn.execute("UPDATE webhook_cursor SET position = $1", cursor)


# The first pending delivery of each (subscription, order) that is due and whose subscription
# is enabled, leased for ``$2`` seconds (another worker skips it; if this one dies, the lease
# runs out and the delivery is due again). A later delivery of the same order waits while an
# earlier one is pending: per order, one endpoint gets them in feed order.
_CLAIM = """
WITH due AS (
    SELECT d.id FROM webhook_deliveries d
    JOIN webhook_subscriptions s ON s.id = d.subscription_id AND s.enabled
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries e
          WHERE e.subscription_id = d.subscription_id AND e.order_id = d.order_id
            AND e.status = 'pending' AND e.position < d.position
      )
    ORDER BY d.next_attempt_at LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d
SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM due, webhook_subscriptions s
WHERE d.id = due.id AND s.id = d.subscription_id
RETURNING d.id, d.subscription_id, d.order_id, s.url, d.body, d.attempts, s.secret,
          CASE WHEN s.previous_secret_until > now() THEN s.previous_secret END AS previous
"""


async def claim_due(pool: asyncpg.Pool, *, limit: int, lease_s: float) -> list[Due]:
    """Lease up to ``limit`` deliveries that are due for an attempt."""
    records = await pool.fetch(_CLAIM, limit, lease_s)
    return [
        Due(
            id=r["id"],
            subscription_id=r["subscription_id"],
            order_id=r["order_id"],
            url=r["url"],
            body=r["body"],
            attempts=r["attempts"],
            secrets=[s for s in (r["secret"], r["previous"]) if s],
        )
        for r in records
    ]


_RECORD = """
WITH attempt AS (
    INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, error, response_excerpt)
    VALUES ($1, $2, $3, $4, $5)
), delivery AS (
    UPDATE webhook_deliveries SET status = $6,
        delivered_at = CASE WHEN $6 = 'delivered' THEN now() END,
        next_attempt_at = now() + make_interval(secs => $7), last_error = $4
    WHERE id = $1 RETURNING subscription_id
)
UPDATE webhook_subscriptions s SET
    failure_streak = CASE WHEN $6 = 'delivered' THEN 0 ELSE s.failure_streak + 1 END,
    enabled = s.enabled AND ($6 = 'delivered' OR s.failure_streak + 1 < $8),
    disabled_reason = CASE
        WHEN s.enabled AND $6 <> 'delivered' AND s.failure_streak + 1 >= $8
        THEN 'disabled after ' || $8 || ' failed attempts in a row; last: ' || coalesce($4, '')
        ELSE s.disabled_reason END,
    updated_at = now()
FROM delivery WHERE s.id = delivery.subscription_id
RETURNING s.enabled
"""


async def record_attempt(
    pool: asyncpg.Pool,
    delivery_id: uuid.UUID,
    *,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
    excerpt: str,
    outcome: str,
    retry_in_s: float,
    disable_after: int,
) -> bool:
    """Record one attempt and its outcome (``delivered``, ``pending`` to retry, ``refused``);
    False if it left the subscription disabled."""
    enabled = await pool.fetchval(
        _RECORD,
        delivery_id,
        status_code,
        latency_ms,
        error,
        excerpt,
        outcome,
        retry_in_s,
        disable_after,
    )
    return bool(enabled)


async def list_deliveries(
    conn: asyncpg.Connection | asyncpg.Pool,
    sub_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
) -> list[DeliveryRow]:
    """A subscription's deliveries, newest first."""
    records = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE subscription_id = $1 "
        "AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, position DESC LIMIT $3",
        sub_id,
        status,
        limit,
    )
    return [from_record(DeliveryRow, r) for r in records]


async def get_delivery(
    conn: asyncpg.Connection | asyncpg.Pool, delivery_id: uuid.UUID
) -> tuple[DeliveryRow, list[AttemptRow]] | None:
    """One delivery with its attempts, oldest first."""
    record = await conn.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1", delivery_id
    )
    if record is None:
        return None
    attempts = await conn.fetch(
        "SELECT attempted_at, status_code, latency_ms, error, response_excerpt "
        "FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id",
        delivery_id,
    )
    return from_record(DeliveryRow, record), [from_record(AttemptRow, a) for a in attempts]


async def redeliver(conn: asyncpg.Connection | asyncpg.Pool, delivery_id: uuid.UUID) -> bool:
    """Make a delivery due again at once, whatever its status."""
    status = await conn.execute(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now() WHERE id = $1",
        delivery_id,
    )
    return bool(status.endswith(" 1"))

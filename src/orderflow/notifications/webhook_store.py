"""Webhook subscriptions, deliveries and attempts: their SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_SUB_COLUMNS = (
    "id, url, customer_id, partner, event_types, description, enabled, disabled_reason, "
    "failure_streak, created_at, updated_at, secret, previous_secret, previous_secret_until"
)
_DELIVERY_COLUMNS = (
    "id, subscription_id, order_id, position, entry_id, event_type, status, attempts, "
    "next_attempt_at, last_error, created_at, delivered_at"
)


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    id: uuid.UUID
    url: str
    customer_id: uuid.UUID | None
    partner: str | None
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    failure_streak: int
    created_at: datetime
    updated_at: datetime
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: uuid.UUID
    subscription_id: uuid.UUID
    order_id: uuid.UUID
    position: int
    entry_id: int
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery claimed for an attempt, with what sending it needs."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    order_id: uuid.UUID
    url: str
    body: str
    attempts: int
    secrets: list[str]


def _sub(record: asyncpg.Record) -> SubscriptionRow:
    return SubscriptionRow(**dict(record))


def _delivery(record: asyncpg.Record) -> DeliveryRow:
    return DeliveryRow(**{k: record[k] for k in DeliveryRow.__slots__})


async def insert_subscription(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    sub_id: uuid.UUID,
    url: str,
    customer_id: uuid.UUID | None,
    partner: str | None,
    event_types: Sequence[str],
    description: str,
    secret: str,
) -> SubscriptionRow:
    """Store a new subscription."""
    record = await conn.fetchrow(
        "INSERT INTO webhook_subscriptions (id, url, customer_id, partner, event_types, "
        f"description, secret) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_SUB_COLUMNS}",
        sub_id,
        url,
        customer_id,
        partner,
        list(event_types),
        description,
        secret,
    )
    return _sub(record)


async def get_subscription(
    conn: asyncpg.Connection | asyncpg.Pool, sub_id: uuid.UUID
) -> SubscriptionRow | None:
    """One subscription."""
    record = await conn.fetchrow(
        f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions WHERE id = $1", sub_id
    )
    return _sub(record) if record else None


async def list_subscriptions(
    conn: asyncpg.Connection | asyncpg.Pool, *, customer_id: uuid.UUID | None
) -> list[SubscriptionRow]:
    """Subscriptions, oldest first: a customer's, or all (``customer_id`` None)."""
    records = await conn.fetch(
        f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions "
        "WHERE $1::uuid IS NULL OR customer_id = $1 ORDER BY created_at, id",
        customer_id,
    )
    return [_sub(r) for r in records]


async def find_by_url(
    conn: asyncpg.Connection | asyncpg.Pool, *, url: str, partner: str
) -> SubscriptionRow | None:
    """A partner subscription to ``url``, if there is one."""
    record = await conn.fetchrow(
        f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions WHERE url = $1 AND partner = $2 "
        "ORDER BY created_at LIMIT 1",
        url,
        partner,
    )
    return _sub(record) if record else None


async def rotate_secret(
    conn: asyncpg.Connection | asyncpg.Pool, sub_id: uuid.UUID, *, secret: str, overlap_s: float
) -> SubscriptionRow | None:
    """Make ``secret`` current; the old one keeps signing for ``overlap_s`` more seconds."""
    record = await conn.fetchrow(
        "UPDATE webhook_subscriptions SET previous_secret = secret, secret = $2, "
        "previous_secret_until = now() + make_interval(secs => $3), updated_at = now() "
        f"WHERE id = $1 RETURNING {_SUB_COLUMNS}",
        sub_id,
        secret,
        overlap_s,
    )
    return _sub(record) if record else None


async def enable(pool: asyncpg.Pool, sub_id: uuid.UUID) -> SubscriptionRow | None:
    """Enable a subscription again, its failure streak forgotten; its waiting deliveries are
    due at once."""
    async with pool.acquire() as conn, conn.transaction():
        record = await conn.fetchrow(
            "UPDATE webhook_subscriptions SET enabled = true, disabled_reason = NULL, "
            f"failure_streak = 0, updated_at = now() WHERE id = $1 RETURNING {_SUB_COLUMNS}",
            sub_id,
        )
        await conn.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = now() "
            "WHERE subscription_id = $1 AND status = 'pending'",
            sub_id,
        )
    return _sub(record) if record else None


async def delete_subscription(conn: asyncpg.Connection | asyncpg.Pool, sub_id: uuid.UUID) -> bool:
    """Delete a subscription and its deliveries."""
    status = await conn.execute("DELETE FROM webhook_subscriptions WHERE id = $1", sub_id)
    return bool(status.endswith(" 1"))


# --- deliveries ----------------------------------------------------------------------------


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
    return [_delivery(r) for r in records]


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
    return _delivery(record), [AttemptRow(**dict(a)) for a in attempts]


async def redeliver(conn: asyncpg.Connection | asyncpg.Pool, delivery_id: uuid.UUID) -> bool:
    """Make a delivery due again at once, whatever its status."""
    status = await conn.execute(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now() WHERE id = $1",
        delivery_id,
    )
    return bool(status.endswith(" 1"))

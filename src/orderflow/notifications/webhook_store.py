"""Webhook subscriptions: their SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from orderflow.notifications.webhook_rows import SUBSCRIPTION_COLUMNS as _SUB_COLUMNS
from orderflow.notifications.webhook_rows import SubscriptionRow


def _sub(record: asyncpg.Record) -> SubscriptionRow:
    return SubscriptionRow(**dict(record))


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

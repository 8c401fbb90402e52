"""What the admin dashboard shows: a snapshot of the system, read with bounded queries.

Every query is served by an index and bounded by time or by a LIMIT, so that a dashboard left
open costs the database the same at a thousand orders as at a hundred million.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

WINDOW_MINUTES = 60
RECENT = 20

_BY_STATUS = """
SELECT status, count(*) AS n FROM orders
WHERE created_at > now() - make_interval(mins => $1)
GROUP BY status
"""
_RECENT = """
SELECT id, customer_id, status, total, currency, created_at, updated_at FROM orders
ORDER BY created_at DESC, id DESC LIMIT $1
"""
_RATES = """
SELECT
    (SELECT count(*) FROM orders WHERE created_at > now() - interval '1 minute') AS placed,
    (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS outbox_backlog,
    now() AS at
"""


async def snapshot(pool: asyncpg.Pool) -> dict[str, Any]:
    """Orders by status over the last hour, the latest orders, throughput and backlog."""
    async with pool.acquire() as conn:
        by_status = await conn.fetch(_BY_STATUS, WINDOW_MINUTES)
        recent = await conn.fetch(_RECENT, RECENT)
        rates = await conn.fetchrow(_RATES)
    at: datetime = rates["at"]
    return {
        "at": at.isoformat(),
        "window_minutes": WINDOW_MINUTES,
        "orders_by_status": {r["status"]: r["n"] for r in by_status},
        "placed_last_minute": rates["placed"],
        "outbox_backlog": rates["outbox_backlog"],
        "recent_orders": [
            {
                "id": str(r["id"]),
                "customer_id": str(r["customer_id"]),
                "status": r["status"],
                "total": r["total"],
                "currency": r["currency"],
                "created_at": r["created_at"].isoformat(),
                "updated_at": r["updated_at"].isoformat(),
            }
            for r in recent
        ],
    }

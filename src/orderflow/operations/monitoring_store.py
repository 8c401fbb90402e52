"""Read-only figures about what the database holds, for the worker's system watch (metrics)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

_OUTBOX = """
SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS backlog,
       (SELECT extract(epoch FROM now() - created_at) FROM outbox
         WHERE published_at IS NULL ORDER BY id LIMIT 1) AS oldest_age_s
"""
_ORDERS = "SELECT status, count(*) AS n FROM orders GROUP BY status"


@dataclass(frozen=True, slots=True)
class SystemFigures:
    """The outbox's backlog and the age of its oldest unpublished event; orders per status."""

    outbox_backlog: int
    outbox_oldest_age_s: float  # 0 when the outbox is drained
    orders_by_status: dict[str, int]


async def system_figures(pool: asyncpg.Pool) -> SystemFigures:
    """Read the figures: two short statements, no lock (the outbox read uses its partial index)."""
    async with pool.acquire() as conn:
        outbox = await conn.fetchrow(_OUTBOX)
        orders = await conn.fetch(_ORDERS)
    return SystemFigures(
        outbox_backlog=int(outbox["backlog"]),
        outbox_oldest_age_s=float(outbox["oldest_age_s"] or 0.0),
        orders_by_status={row["status"]: int(row["n"]) for row in orders},
    )

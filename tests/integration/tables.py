"""Helpers to prove that a request changed nothing in the database."""

from __future__ import annotations

import asyncpg

WATCHED = (
    "customers",
    "products",
    "orders",
    "order_lines",
    "outbox",
    "order_timeline",
    "stock_movements",
    "payments",
    "inbox",
)
# What a request is responsible for: a timeline entry's position is given later, by the
# order feed's sequencer running in the background (ordering.streams), not by a request.
SOURCES = {
    "order_timeline": "(SELECT id, order_id, event_id, event_type, actor, status_after, "
    "occurred_at, recorded_at, data FROM order_timeline)"
}


async def snapshot(pool: asyncpg.Pool) -> dict[str, object]:
    """Row count and a content hash of every watched table."""
    out: dict[str, object] = {}
    async with pool.acquire() as conn:
        for table in WATCHED:
            out[table] = await conn.fetchval(
                f"SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, ',' "
                f"ORDER BY t::text)), '') FROM {SOURCES.get(table, table)} t"
            )
    return out

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


async def snapshot(pool: asyncpg.Pool) -> dict[str, object]:
    """Row count and a content hash of every watched table."""
    out: dict[str, object] = {}
    async with pool.acquire() as conn:
        for table in WATCHED:
            out[table] = await conn.fetchval(
                f"SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, ',' "
                f"ORDER BY t::text)), '') FROM {table} t"
            )
    return out

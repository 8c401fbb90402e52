"""The inbox: the (event, handler) pairs already applied, claimed in the transaction that
applies them (invariant 3)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

_SEEN = "SELECT 1 FROM inbox WHERE event_id = $1 AND handler = $2"


def claimed_cte(first: int, *, where: str = "TRUE") -> str:
    """A CTE ``claimed(event_id)``: the event ids (parameter ``first``, a uuid[]) that the
    handler named by parameter ``first + 1`` had not applied yet, now claimed in the inbox;
    only those for which ``where`` holds (an SQL condition on ``ids.id``).

    A concurrent claim of the same key waits until the first commits, then sees it. The keys
    are claimed in id order: two batches claiming overlapping keys take their locks in one
    order.
    """
    return f"""claimed AS (
    INSERT INTO inbox (event_id, handler)
    SELECT id, ${first + 1} FROM unnest(${first}::uuid[]) AS ids(id) WHERE {where}
    ORDER BY id
    ON CONFLICT DO NOTHING RETURNING event_id
)"""


_CLAIM_MANY = f"WITH {claimed_cte(1)} SELECT event_id FROM claimed"


async def claim_many(
    conn: asyncpg.Connection, handler: str, event_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Claim these sorted event ids inside a transaction; those not applied before."""
    return {r["event_id"] for r in await conn.fetch(_CLAIM_MANY, event_ids, handler)}


async def seen(pool: asyncpg.Pool, event_id: uuid.UUID, handler: str) -> bool:
    """Whether the key was applied (committed) already; outside any transaction."""
    return bool(await pool.fetchval(_SEEN, event_id, handler))

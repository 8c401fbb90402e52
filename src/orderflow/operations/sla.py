"""The SLA watchdog: mark the orders that stayed in a status past its deadline.

One statement per sweep finds the late orders (an order entered its status at ``updated_at``:
only status changes write the row), records them in ``order_overdue``, clears the marks of
orders that moved on, and counts the late ones per status. Every worker may sweep at once:
the statement is idempotent and the last one wins with the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

_SWEEP = """
WITH deadline AS (
    SELECT * FROM unnest($1::text[], $2::float8[]) AS d(status, secs)
), late AS (
    SELECT o.id, o.status, o.updated_at AS since,
           o.updated_at + make_interval(secs => d.secs) AS due_at
    FROM deadline d JOIN orders o ON o.status = d.status
    WHERE o.updated_at < now() - make_interval(secs => d.secs)
), cleared AS (
    DELETE FROM order_overdue v
    WHERE NOT EXISTS (SELECT 1 FROM late WHERE late.id = v.order_id)
), marked AS (
    INSERT INTO order_overdue (order_id, status, since, due_at)
    SELECT id, status, since, due_at FROM late
    ON CONFLICT (order_id) DO UPDATE
        SET status = EXCLUDED.status, since = EXCLUDED.since, due_at = EXCLUDED.due_at,
            marked_at = now()
        WHERE (order_overdue.status, order_overdue.due_at)
              IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.due_at)
)
SELECT status, count(*) AS n FROM late GROUP BY status
"""

_LIST = """
SELECT v.order_id, v.status, v.since, v.due_at, v.marked_at, o.total, o.currency
FROM order_overdue v JOIN orders o ON o.id = v.order_id AND o.status = v.status
ORDER BY v.since, v.order_id LIMIT $1
"""


async def mark_overdue(pool: asyncpg.Pool, *, deadlines: Mapping[str, float]) -> dict[str, int]:
    """Mark the orders past their status's deadline, clear the rest; late orders per status
    (every status of ``deadlines`` present, 0 when none is late)."""
    statuses = list(deadlines)
    rows = await pool.fetch(_SWEEP, statuses, [deadlines[s] for s in statuses])
    counts = dict.fromkeys(statuses, 0)
    counts.update({r["status"]: r["n"] for r in rows})
    return counts


@dataclass(frozen=True, slots=True)
class Overdue:
    """An order the watchdog found late: in ``status`` since ``since``, due at ``due_at``."""

    order_id: str
    status: str
    since: datetime
    due_at: datetime
    marked_at: datetime
    total: int
    currency: str


async def overdue_orders(pool: asyncpg.Pool, *, limit: int = 100) -> list[Overdue]:
    """The orders marked overdue that are still in that status, oldest first."""
    rows = await pool.fetch(_LIST, limit)
    return [
        Overdue(
            order_id=str(r["order_id"]),
            status=r["status"],
            since=r["since"],
            due_at=r["due_at"],
            marked_at=r["marked_at"],
            total=r["total"],
            currency=r["currency"],
        )
        for r in rows
    ]


async def overdue_count(pool: asyncpg.Pool) -> int:
    """How many orders are marked overdue and still in that status."""
    found: int = await pool.fetchval(
        "SELECT count(*) FROM order_overdue v JOIN orders o "
        "ON o.id = v.order_id AND o.status = v.status"
    )
    return found

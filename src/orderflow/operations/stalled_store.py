"""Orders that made no progress for longer than their step allows, with their last event."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

# $1/$2: statuses and their allowances in seconds; $3: at most this many; $4: how far back to
# look for cancelled orders that still owe compensation (an index range on (status,
# created_at)); $5: their allowance. An order counts only while the outbox row of its last
# timeline event was published longer ago than its allowance: a row re-driven (marked
# unpublished, then published again) waits a whole allowance before it is sent once more,
# so several workers reconciling at once, or sweep after sweep, send it once per allowance.
_STALLED = """
WITH candidates AS (
    (SELECT o.id, a.stall_s FROM unnest($1::text[], $2::float8[]) AS a(status, stall_s)
     JOIN orders o ON o.status = a.status
     WHERE o.updated_at < now() - make_interval(secs => a.stall_s)
     ORDER BY o.updated_at LIMIT $3)
    UNION
    (SELECT o.id, $5::float8 FROM orders o
     WHERE o.status = 'cancelled' AND o.created_at > now() - make_interval(secs => $4)
       AND o.updated_at < now() - make_interval(secs => $5)
       AND (EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id
                    AND p.status IN ('authorized', 'captured'))
            OR EXISTS (SELECT 1 FROM stock_movements r
                       WHERE r.order_id = o.id AND r.kind = 'reserve'
                       AND NOT EXISTS (SELECT 1 FROM stock_movements x
                                       WHERE x.order_id = o.id AND x.product_id = r.product_id
                                       AND x.kind = 'release')))
     LIMIT $3)
)
SELECT c.id AS order_id, ob.event_id, ob.event_type
FROM candidates c
JOIN LATERAL (
    SELECT t.event_id FROM order_timeline t WHERE t.order_id = c.id ORDER BY t.id DESC LIMIT 1
) last ON true
JOIN outbox ob ON ob.event_id = last.event_id
WHERE ob.published_at < now() - make_interval(secs => c.stall_s)
"""


@dataclass(frozen=True, slots=True)
class Stalled:
    """An order that made no progress, and the last event on its timeline."""

    order_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str


async def stalled_orders(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    allowances: Mapping[str, float],
    compensation_stall_s: float,
    compensation_window_s: float,
    limit: int,
) -> list[Stalled]:
    """Orders unchanged for longer than the allowance of their status (``allowances``: status
    -> seconds), and cancelled ones (created in the last ``compensation_window_s``) unchanged
    for ``compensation_stall_s`` that still hold money at the gateway or reserved stock; each
    with its last event, published longer ago than the same allowance."""
    rows = await conn.fetch(
        _STALLED,
        list(allowances),
        [float(s) for s in allowances.values()],
        limit,
        float(compensation_window_s),
        float(compensation_stall_s),
    )
    return [Stalled(r["order_id"], r["event_id"], r["event_type"]) for r in rows]

"""The relay's side of the outbox: claim unpublished rows, mark them published, prune."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# SKIP LOCKED lets several relays share the table: each claims rows no other relay holds.
# The envelope is read as text: it is published as it is stored, never decoded here.
_CLAIM = """
SELECT id, event_id, event_type, envelope::text AS body,
       envelope ->> 'correlation_id' AS correlation_id,
       envelope ->> 'causation_id' AS causation_id
FROM outbox
WHERE published_at IS NULL AND NOT (id = ANY($2::bigint[]))
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""
_MARK = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
_PRUNE = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => $1)
    LIMIT $2
)
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One unpublished event, as the relay publishes it."""

    id: int
    event_id: str
    event_type: str
    body: bytes
    correlation_id: str | None
    causation_id: str | None


async def claim(conn: asyncpg.Connection, *, limit: int, skip: list[int]) -> list[OutboxRow]:
    """Lock up to ``limit`` unpublished rows, oldest first; call inside a transaction."""
    records = await conn.fetch(_CLAIM, limit, skip)
    return [
        OutboxRow(
            id=r["id"],
            event_id=str(r["event_id"]),
            event_type=r["event_type"],
            body=r["body"].encode(),
            correlation_id=r["correlation_id"],
            causation_id=r["causation_id"],
        )
        for r in records
    ]


async def mark_published(conn: asyncpg.Connection, ids: list[int]) -> None:
    """Record that the broker confirmed these rows."""
    if ids:
        await conn.execute(_MARK, ids)


async def prune(pool: asyncpg.Pool, *, older_than_s: float, batch: int = 5000) -> int:
    """Delete published rows older than the retention, in bounded batches; how many went."""
    total = 0
    while True:
        status = await pool.execute(_PRUNE, float(older_than_s), batch)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < batch:
            return total

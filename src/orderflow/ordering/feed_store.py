"""The order feed: timeline entries numbered in commit order, read from a position on.

A timeline entry's ``id`` is taken at insert, so across orders ids do not follow commit order:
a transaction that inserted entry 100 may commit after the one that inserted 101. A reader
that has seen 101 and resumes with "id > 101" would never see 100. So entries get a
``position`` after they commit, from one sequencer at a time (an advisory lock): each run
numbers every committed entry that has none, in id order, and positions become visible in
the order they were given. Positions are dense; a feed resumes by position, never by id.

For one order, entries commit in id order already: every writer holds the order's row lock
(``transitions.lock_order``, the batch claims, the status steps), so a sequencer run never
numbers an order's later entry before its earlier one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from orderflow.domain.model import FeedEntry
from orderflow.domain.orders import OrderStatus

# pg_try_advisory_xact_lock key: one sequencer per database at a time ("tlseq").
SEQUENCER_LOCK: Final = 0x746C736571

_COLUMNS = (
    "t.position, t.id, t.order_id, o.customer_id, t.event_id, t.event_type, t.actor, "
    "t.status_after, t.occurred_at, t.data"
)

_ANY_UNSEQUENCED = "SELECT EXISTS (SELECT 1 FROM order_timeline WHERE position IS NULL)"

# Run only while holding the sequencer lock, in a statement that starts after taking it: its
# snapshot then sees every position an earlier run committed.
_SEQUENCE = f"""
WITH todo AS (
    SELECT id, row_number() OVER (ORDER BY id) AS rn
    FROM order_timeline WHERE position IS NULL ORDER BY id LIMIT $1
), counted AS (
    SELECT count(*) AS n FROM todo
), base AS (
    UPDATE timeline_sequence s SET last_position = s.last_position + c.n
    FROM counted c WHERE c.n > 0
    RETURNING s.last_position - c.n AS base
), placed AS (
    UPDATE order_timeline t SET position = base.base + todo.rn
    FROM todo, base WHERE t.id = todo.id
    RETURNING t.*
)
SELECT {_COLUMNS} FROM placed t JOIN orders o ON o.id = t.order_id ORDER BY t.position
"""


def _entry(row: asyncpg.Record) -> FeedEntry:
    return FeedEntry(
        position=row["position"],
        id=row["id"],
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        event_id=row["event_id"],
        event=row["event_type"],
        actor=row["actor"],
        status=OrderStatus(row["status_after"]),
        at=row["occurred_at"],
        data=row["data"],
    )


async def sequence(pool: asyncpg.Pool, *, limit: int = 1000) -> list[FeedEntry] | None:
    """Give positions to committed entries that have none (up to ``limit``, oldest id first);
    the entries numbered, or None if another sequencer holds the lock (it will number them,
    or the caller tries again)."""
    async with pool.acquire() as conn:
        if not await conn.fetchval(_ANY_UNSEQUENCED):
            return []
        async with conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SEQUENCER_LOCK):
                return None
            rows = await conn.fetch(_SEQUENCE, limit)
    return [_entry(r) for r in rows]


async def head(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[int, int]:
    """The last position given, and the id of the entry at it (0, 0 on an empty feed)."""
    row = await conn.fetchrow(
        "SELECT s.last_position, coalesce(t.id, 0) AS id FROM timeline_sequence s "
        "LEFT JOIN order_timeline t ON t.position = s.last_position AND s.last_position > 0"
    )
    assert row is not None, "migration 0005 creates the timeline_sequence row"
    return int(row["last_position"]), int(row["id"])


async def position_of(conn: asyncpg.Connection | asyncpg.Pool, entry_id: int) -> int | None:
    """The position of timeline entry ``entry_id``; None if there is no such entry or it has
    no position yet."""
    position = await conn.fetchval("SELECT position FROM order_timeline WHERE id = $1", entry_id)
    return int(position) if position is not None else None


async def read_after(
    conn: asyncpg.Connection | asyncpg.Pool,
    position: int,
    *,
    order_id: uuid.UUID | None = None,
    customer_id: uuid.UUID | None = None,
    statuses: Sequence[OrderStatus] = (),
    limit: int = 500,
) -> tuple[list[FeedEntry], int]:
    """Entries after ``position`` that match the filters, in position order, and how far the
    read looked: the last position given when it ran if it returned fewer than ``limit``
    entries (nothing matching lies between), else the last entry's."""
    where = ["t.position > $1"]
    args: list[Any] = [position]
    if order_id is not None:
        args.append(order_id)
        where.append(f"t.order_id = ${len(args)}")
    if customer_id is not None:
        args.append(customer_id)
        where.append(f"o.customer_id = ${len(args)}")
    if statuses:
        args.append([s.value for s in statuses])
        where.append(f"t.status_after = ANY(${len(args)}::text[])")
    args.append(limit)
    # One statement, one snapshot: the last position given and the entries up to it.
    rows = await conn.fetch(
        f"SELECT s.last_position AS seen, x.* FROM timeline_sequence s LEFT JOIN LATERAL ("
        f"SELECT {_COLUMNS} FROM order_timeline t JOIN orders o ON o.id = t.order_id "
        f"WHERE {' AND '.join(where)} ORDER BY t.position LIMIT ${len(args)}"
        f") x ON TRUE ORDER BY x.position",
        *args,
    )
    entries = [_entry(r) for r in rows if r["position"] is not None]
    if len(entries) == limit:
        return entries, entries[-1].position
    return entries, max(int(rows[0]["seen"]), position)

"""Live order streams: the order feed followed from a position, filtered for one caller
(from the ``FeedHub``'s window while it reaches back far enough, else from PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from orderflow.domain.errors import InvalidRequest, NotFound
from orderflow.domain.model import FeedEntry
from orderflow.domain.orders import OrderStatus
from orderflow.ordering import feed_store as timeline_feed
from orderflow.ordering import store as orders
from orderflow.ordering.feed_hub import FeedHub


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which entries a stream shows: one order's, one customer's, by status after the entry."""

    order_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None
    statuses: frozenset[OrderStatus] = frozenset()

    def matches(self, entry: FeedEntry) -> bool:
        """Whether ``entry`` belongs on the stream."""
        return (
            (self.order_id is None or entry.order_id == self.order_id)
            and (self.customer_id is None or entry.customer_id == self.customer_id)
            and (not self.statuses or entry.status in self.statuses)
        )


async def check_order(pool: asyncpg.Pool, *, order_id: uuid.UUID, owner: uuid.UUID | None) -> None:
    """NotFound unless the order exists and ``owner`` (when given) owns it."""
    async with pool.acquire() as conn:
        found = await orders.get(conn, order_id, with_details=False)
    if found is None or (owner is not None and found.customer_id != owner):
        raise NotFound(f"order {order_id} does not exist")


async def key_is_live(pool: asyncpg.Pool, key_id: uuid.UUID) -> bool:
    """Whether the key still exists unrevoked; True when the database cannot say (a stream
    is not cut off by an outage, it ends at the first check after the revocation)."""
    try:
        live = await pool.fetchval("SELECT revoked_at IS NULL FROM api_keys WHERE id = $1", key_id)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return True
    return bool(live)


async def start_position(
    pool: asyncpg.Pool, *, last_event_id: int | None, whole_history: bool
) -> tuple[int, int | None]:
    """Where a stream starts: after the entry ``last_event_id`` names, from the beginning
    (``whole_history``), or from now; with the id to announce when starting from now."""
    if last_event_id is not None:
        if last_event_id == 0:
            return 0, None
        position = await timeline_feed.position_of(pool, last_event_id)
        if position is None:
            raise InvalidRequest(f"Last-Event-ID {last_event_id} names no event of this stream")
        return position, None
    if whole_history:
        return 0, None
    position, entry_id = await timeline_feed.head(pool)
    return position, entry_id


async def follow(
    hub: FeedHub,
    pool: asyncpg.Pool,
    flt: StreamFilter,
    *,
    position: int,
    heartbeat_s: float,
    still_allowed: Callable[[], Awaitable[bool]],
    batch: int = 500,
) -> AsyncIterator[FeedEntry | None]:
    """The entries after ``position`` that match ``flt``, in feed order, then live; ``None``
    whenever ``heartbeat_s`` passed without one. Ends when ``still_allowed`` says no (it is
    asked at each heartbeat)."""
    next_beat = time.monotonic() + heartbeat_s
    while True:
        recent = hub.recent_after(position)
        if recent is None:
            entries, position = await timeline_feed.read_after(
                pool,
                position,
                order_id=flt.order_id,
                customer_id=flt.customer_id,
                statuses=sorted(flt.statuses),
                limit=batch,
            )
            more = len(entries) == batch
        else:
            entries = [e for e in recent if flt.matches(e)]
            position = recent[-1].position if recent else position
            more = False
        for entry in entries:
            yield entry
        if more:
            continue
        await hub.wait_beyond(position, max(0.0, next_beat - time.monotonic()))
        if time.monotonic() >= next_beat:
            if not await still_allowed():
                return
            yield None
            next_beat = time.monotonic() + heartbeat_s

"""The unit of work: one PostgreSQL transaction, and the events it will publish via the outbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from orderflow.domain.events import Envelope
from orderflow.domain.orders import OrderStatus

Pending = tuple[Envelope, OrderStatus | None]


def event_ctes(first: int) -> str:
    """CTEs writing events to the outbox and, with a status, the timeline; their seven
    parameters are numbered from ``first`` (``event_args`` gives them). A statement that
    changes state can carry them, so that state and events are written in one round trip."""
    p = [f"${first + i}" for i in range(7)]
    return f"""
ev AS (
    SELECT * FROM unnest({p[0]}::uuid[], {p[1]}::text[], {p[2]}::uuid[], {p[3]}::jsonb[],
                         {p[4]}::text[], {p[5]}::text[], {p[6]}::timestamptz[])
        AS e(event_id, event_type, order_id, envelope, actor, status_after, occurred_at)
), outboxed AS (
    INSERT INTO outbox (event_id, event_type, order_id, envelope)
    SELECT event_id, event_type, order_id, envelope FROM ev
), timelined AS (
    INSERT INTO order_timeline (order_id, event_id, event_type, actor, status_after,
                                occurred_at, data)
    SELECT order_id, event_id, event_type, actor, status_after, occurred_at,
           envelope -> 'payload'
    FROM ev WHERE status_after IS NOT NULL
)"""


def event_args(pending: Sequence[Pending]) -> list[list[Any]]:
    """The seven parameters of ``event_ctes`` for ``pending`` events."""
    return [
        [env.event_id for env, _ in pending],
        [env.type for env, _ in pending],
        [env.order_id for env, _ in pending],
        [env.model_dump(mode="json") for env, _ in pending],
        [env.actor for env, _ in pending],
        [status.value if status else None for _, status in pending],
        [env.occurred_at for env, _ in pending],
    ]


# Events and timeline rows are written together by one statement per unit of work.
_WRITE_EVENTS = f"WITH {event_ctes(1)} SELECT 1"


@dataclass
class UnitOfWork:
    """A connection inside a transaction, plus the events emitted during it.

    Events go to the outbox in the same transaction as the state change that caused them
    (invariant 2); an event about an order also lands on that order's timeline.
    """

    conn: asyncpg.Connection
    _pending: list[Pending] = field(default_factory=list)

    def emit(self, envelope: Envelope, *, status_after: OrderStatus | None = None) -> None:
        """Queue ``envelope`` for the outbox; with ``status_after`` it joins the timeline."""
        self._pending.append((envelope, status_after))

    @property
    def emitted(self) -> list[Envelope]:
        """The envelopes queued so far."""
        return [env for env, _ in self._pending]

    async def flush(self) -> None:
        """Write the queued events; called before commit."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        await self.conn.execute(_WRITE_EVENTS, *event_args(pending))


@asynccontextmanager
async def unit_of_work(pool: asyncpg.Pool) -> AsyncIterator[UnitOfWork]:
    """Run the block in one transaction; queued events are written just before commit."""
    async with pool.acquire() as conn, conn.transaction():
        uow = UnitOfWork(conn)
        yield uow
        await uow.flush()


def new_id() -> uuid.UUID:
    """A fresh random identifier."""
    return uuid.uuid4()

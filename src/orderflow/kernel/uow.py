"""The unit of work: one PostgreSQL transaction, and the events it will publish via the outbox."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from orderflow.domain.events import Envelope
from orderflow.domain.idempotency import IdempotentRequest, RecordedResponse
from orderflow.domain.model import Order
from orderflow.domain.orders import OrderStatus
from orderflow.kernel import idempotency as records
from orderflow.kernel import outbox

Pending = tuple[Envelope, OrderStatus | None]


def event_ctes(first: int, *, when: str = "TRUE") -> str:
    """CTEs that write events to the outbox and, those with a status, to the timeline.

    Their seven parameters are numbered from ``first`` (``event_args`` gives them), so that a
    statement changing state can carry its events and cost no extra round trip; ``when`` is
    an SQL condition under which they are written at all.
    """
    p = [f"${first + i}" for i in range(7)]
    return f"""ev AS (
    SELECT * FROM unnest({p[0]}::uuid[], {p[1]}::text[], {p[2]}::uuid[], {p[3]}::jsonb[],
                         {p[4]}::text[], {p[5]}::text[], {p[6]}::timestamptz[])
        AS e(event_id, event_type, order_id, envelope, actor, status_after, occurred_at)
    WHERE {when}
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


# The order statuses a unit of work changed (parameters 8 to 11), written by the statement
# that writes its events (1 to 7), then the idempotent answer when there is one, from 12.
_STATUS_CTE = """, statused AS (
    UPDATE orders o SET status = s.status, cancel_reason = s.cancel_reason,
                        version = o.version + s.changes, updated_at = now()
    FROM unnest($8::uuid[], $9::text[], $10::text[], $11::int[])
        AS s(id, status, cancel_reason, changes)
    WHERE o.id = s.id AND o.id = ANY($8::uuid[])  -- the primary key (see inventory.py)
)"""
_WRITE = "WITH " + event_ctes(1) + _STATUS_CTE


@dataclass(frozen=True, slots=True)
class _StatusChange:
    status: OrderStatus
    cancel_reason: str | None
    changes: int  # how many transitions this unit of work made (the row's version moves by it)


@dataclass
class UnitOfWork:
    """A connection inside a transaction, plus the events emitted during it.

    Events go to the outbox in the same transaction as the state change that caused them
    (invariant 2); an event about an order also lands on that order's timeline. With an
    ``idempotency`` request, its record is claimed first and answered by ``complete``, in the
    same transaction as the effect.

    The orders it locked are kept by id (``locked``), so a batch that locked them all at once
    finds each again without a query; their status changes are written with the events, by
    the one statement of ``flush``.
    """

    conn: asyncpg.Connection
    idempotency: IdempotentRequest | None = None
    _pending: list[Pending] = field(default_factory=list)
    _answer: RecordedResponse | None = None
    _after_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    completed: bool = False
    wrote_events: bool = False
    locked: dict[uuid.UUID, Order] = field(default_factory=dict)
    _changes: dict[uuid.UUID, _StatusChange] = field(default_factory=dict)

    def change_status(
        self, order: Order, status: OrderStatus, *, cancel_reason: str | None
    ) -> None:
        """Move a locked order to ``status``; written by ``flush``, before commit."""
        self.locked[order.id] = dataclasses.replace(
            order, status=status, cancel_reason=cancel_reason
        )
        earlier = self._changes.get(order.id)
        self._changes[order.id] = _StatusChange(
            status, cancel_reason, (earlier.changes if earlier else 0) + 1
        )

    def after_commit(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` once the transaction has committed (never if it rolls back).

        For side effects that must not see uncommitted state, such as invalidating a cache;
        a hook must not raise: the effect it follows is already durable.
        """
        self._after_commit.append(hook)

    def complete(self, result: object) -> None:
        """Hand over the use case's result: an idempotent request records its response."""
        self.completed = True
        if self.idempotency is not None:
            self._answer = self.idempotency.record(result)

    def emit(self, envelope: Envelope, *, status_after: OrderStatus | None = None) -> None:
        """Queue ``envelope`` for the outbox; with ``status_after`` it joins the timeline."""
        self._pending.append((envelope, status_after))

    @property
    def emitted(self) -> list[Envelope]:
        """The envelopes queued so far."""
        return [env for env, _ in self._pending]

    async def flush(self) -> None:
        """Write the queued events and status changes, and the idempotent answer if it is
        known by now, with one statement."""
        answer, self._answer = self._answer, None
        request = self.idempotency
        if not self._pending and not self._changes:
            if request is not None and answer is not None:
                await records.respond(self.conn, request, answer)
            return
        pending, self._pending = self._pending, []
        changes, self._changes = self._changes, {}
        self.wrote_events = self.wrote_events or bool(pending)
        sql = [_WRITE]
        args: list[Any] = [
            *event_args(pending),
            list(changes),
            [c.status.value for c in changes.values()],
            [c.cancel_reason for c in changes.values()],
            [c.changes for c in changes.values()],
        ]
        if request is not None and answer is not None:
            sql.append(records.respond_cte(len(args) + 1))
            args += records.respond_args(request, answer)
        sql.append(" SELECT 1")
        await self.conn.execute("".join(sql), *args)


@asynccontextmanager
async def unit_of_work(
    pool: asyncpg.Pool, *, idempotency: IdempotentRequest | None = None
) -> AsyncIterator[UnitOfWork]:
    """Run the block in one transaction; queued events are written just before commit.

    With ``idempotency``, the record is claimed before the block runs: a repeated request
    raises ``Replay`` (or a 409/422 error) instead, and nothing of the block happens.
    """
    async with pool.acquire() as conn, conn.transaction():
        if idempotency is not None:
            await records.claim(conn, idempotency)
        uow = UnitOfWork(conn, idempotency)
        yield uow
        if idempotency is not None and not uow.completed:
            raise RuntimeError("an idempotent unit of work ended without complete(result)")
        await uow.flush()
    if uow.wrote_events:
        outbox.wake_relays(pool)
    for hook in uow._after_commit:
        await hook()


def new_id() -> uuid.UUID:
    """A fresh random identifier."""
    return uuid.uuid4()

"""The unit of work: one PostgreSQL transaction, and the events it will publish via the outbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from orderflow.adapters.postgres import idempotency as records
from orderflow.domain.events import Envelope
from orderflow.domain.idempotency import IdempotentRequest, RecordedResponse
from orderflow.domain.orders import OrderStatus

# Events and timeline rows are written together by one statement per unit of work.
_WRITE_EVENTS = """
WITH ev AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::jsonb[], $5::text[],
                         $6::text[], $7::timestamptz[])
        AS e(event_id, event_type, order_id, envelope, actor, status_after, occurred_at)
), outboxed AS (
    INSERT INTO outbox (event_id, event_type, order_id, envelope)
    SELECT event_id, event_type, order_id, envelope FROM ev
){answer}
INSERT INTO order_timeline (order_id, event_id, event_type, actor, status_after, occurred_at,
                            data)
SELECT order_id, event_id, event_type, actor, status_after, occurred_at, envelope -> 'payload'
FROM ev WHERE status_after IS NOT NULL
"""
_WRITE_EVENTS_ONLY = _WRITE_EVENTS.format(answer="")
_WRITE_EVENTS_AND_ANSWER = _WRITE_EVENTS.format(answer=records.RESPOND_CTE)


@dataclass
class UnitOfWork:
    """A connection inside a transaction, plus the events emitted during it.

    Events go to the outbox in the same transaction as the state change that caused them
    (invariant 2); an event about an order also lands on that order's timeline. With an
    ``idempotency`` request, its record is claimed first and answered by ``complete``, in the
    same transaction as the effect.
    """

    conn: asyncpg.Connection
    idempotency: IdempotentRequest | None = None
    _pending: list[tuple[Envelope, OrderStatus | None]] = field(default_factory=list)
    _answer: RecordedResponse | None = None
    completed: bool = False

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
        """Write the queued events, and the idempotent answer if it is known by now."""
        answer, self._answer = self._answer, None
        request = self.idempotency
        if not self._pending:
            if request is not None and answer is not None:
                await records.respond(self.conn, request, answer)
            return
        pending, self._pending = self._pending, []
        extra = (
            records.respond_args(request, answer)
            if request is not None and answer is not None
            else []
        )
        await self.conn.execute(
            _WRITE_EVENTS_AND_ANSWER if extra else _WRITE_EVENTS_ONLY,
            [env.event_id for env, _ in pending],
            [env.type for env, _ in pending],
            [env.order_id for env, _ in pending],
            [env.model_dump(mode="json") for env, _ in pending],
            [env.actor for env, _ in pending],
            [status.value if status else None for _, status in pending],
            [env.occurred_at for env, _ in pending],
            *extra,
        )


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


def new_id() -> uuid.UUID:
    """A fresh random identifier."""
    return uuid.uuid4()

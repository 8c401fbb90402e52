"""Applying deliveries to a handler, effectively once (invariant 3).

The transport-free core of the worker: the RabbitMQ consumer decodes messages, calls ``apply``
or ``apply_batch`` and acks, retries or dead-letters according to the outcome or the error.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg

from orderflow.kernel import inbox
from orderflow.kernel.handlers import CallStep, Delivery, Handler, StatementStep
from orderflow.kernel.uow import UnitOfWork, unit_of_work


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    NOTHING_TO_DO = "nothing_to_do"  # the call found no work: no transaction was opened


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a delivery's call to the outside world answered, for its ``record``."""

    value: Any


async def prepare(pool: asyncpg.Pool, step: CallStep, delivery: Delivery) -> Outcome | Prepared:
    """Run ``step``'s call for ``delivery``, outside any transaction.

    DUPLICATE for a retry or redelivery the inbox holds already, NOTHING_TO_DO when the call
    found no work (nothing is recorded: a redelivery asks again), else its answer.
    """
    if delivery.is_repeat and await inbox.seen(pool, delivery.envelope.event_id, step.name):
        return Outcome.DUPLICATE
    value = await step.call(delivery)
    return Outcome.NOTHING_TO_DO if value is None else Prepared(value)


async def apply(
    pool: asyncpg.Pool, handler: Handler, delivery: Delivery, prepared: Prepared | None = None
) -> Outcome:
    """Apply one delivery (a batch of one); a ``CallStep``'s call runs first unless
    ``prepared`` holds its answer already (its batch failed and it is applied alone)."""
    if isinstance(handler, CallStep) and prepared is None:
        ready = await prepare(pool, handler, delivery)
        if isinstance(ready, Outcome):
            return ready
        prepared = ready
    return (await apply_batch(pool, handler, [delivery], None if prepared is None else [prepared]))[
        0
    ]


async def apply_batch(
    pool: asyncpg.Pool,
    handler: Handler,
    deliveries: Sequence[Delivery],
    prepared: Sequence[Prepared] | None = None,
) -> list[Outcome]:
    """Apply every delivery the inbox does not hold yet, all in one transaction.

    The inbox rows, the handler's writes and the events it emits commit together, so a crash at
    any point either leaves no trace (the redelivery applies it) or leaves all of it (the
    redelivery is a duplicate). All or nothing: if the handler raises, nothing of the batch is
    applied and the exception propagates (the worker then applies the deliveries one by one).
    A copy within the batch, or of an earlier delivery, is a DUPLICATE. A ``CallStep`` gets
    ``prepared``, one answer per delivery.
    """
    if isinstance(handler, CallStep) != (prepared is not None):
        raise ValueError(f"handler {handler.name!r}: a call step needs prepared, per delivery")
    if prepared is not None and len(prepared) != len(deliveries):
        raise ValueError(f"{len(deliveries)} deliveries, {len(prepared)} prepared")
    if isinstance(handler, StatementStep):
        return _outcomes(deliveries, await handler.apply(pool, handler.name, deliveries))
    events = sorted({(d.envelope.event_id, d.envelope.order_id) for d in deliveries})
    async with unit_of_work(pool) as uow:
        fresh = await _claim(uow, handler, events)
        outcomes = _outcomes(deliveries, fresh)
        applied = [i for i, o in enumerate(outcomes) if o is Outcome.APPLIED]
        if applied:
            if isinstance(handler, CallStep):
                assert prepared is not None
                answered = [(deliveries[i], prepared[i].value) for i in applied]
                await handler.record(uow, answered)
            else:
                await handler.apply(uow, [deliveries[i] for i in applied])
    return outcomes


async def _claim(
    uow: UnitOfWork, handler: Handler, events: Sequence[tuple[uuid.UUID, uuid.UUID | None]]
) -> set[uuid.UUID]:
    """Claim these sorted (event id, order id) pairs in ``handler``'s inbox, with its own
    ``claim`` when it has one (which may lock rows too); the ids claimed now."""
    claim = getattr(handler, "claim", None)
    if claim is not None:
        return set(await claim(uow, handler.name, events))
    return await inbox.claim_many(uow.conn, handler.name, [e for e, _ in events])


def _outcomes(deliveries: Sequence[Delivery], fresh: set[uuid.UUID]) -> list[Outcome]:
    """APPLIED for the first delivery of each event id claimed now, DUPLICATE for the rest."""
    first: set[uuid.UUID] = set()
    outcomes = []
    for delivery in deliveries:
        event_id = delivery.envelope.event_id
        applied = event_id in fresh and event_id not in first
        first.add(event_id)
        outcomes.append(Outcome.APPLIED if applied else Outcome.DUPLICATE)
    return outcomes

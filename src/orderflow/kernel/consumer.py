"""Applying one delivery to one handler, effectively once (invariant 3).

This is the transport-free core of the worker: the RabbitMQ consumer decodes a message,
calls ``apply`` and acks, retries or dead-letters according to the outcome or the error.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg

from orderflow.kernel import inbox
from orderflow.kernel.handlers import Delivery, HandlerSpec
from orderflow.kernel.uow import UnitOfWork, unit_of_work


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    NOTHING_TO_DO = "nothing_to_do"  # ``prepare`` found no work: no transaction was opened


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a delivery's ``prepare`` step returned, for its ``handle``."""

    value: Any


async def prepare(pool: asyncpg.Pool, spec: HandlerSpec, delivery: Delivery) -> Outcome | Prepared:
    """Run ``spec``'s ``prepare`` for ``delivery``, outside any transaction.

    DUPLICATE for a retry or redelivery the inbox holds already, NOTHING_TO_DO when
    ``prepare`` found no work (nothing is recorded: a redelivery asks again), else what
    ``handle`` gets.
    """
    assert spec.prepare is not None
    if delivery.is_repeat and await inbox.seen(pool, delivery.envelope.event_id, spec.name):
        return Outcome.DUPLICATE
    value = await spec.prepare(delivery)
    return Outcome.NOTHING_TO_DO if value is None else Prepared(value)


async def apply(
    pool: asyncpg.Pool, spec: HandlerSpec, delivery: Delivery, prepared: Prepared | None = None
) -> Outcome:
    """Run ``spec`` for ``delivery`` unless the inbox says it already ran; one transaction.

    The inbox row, the handler's writes and the events it emits commit together, so a crash at
    any point either leaves no trace (and the redelivery applies it) or leaves all of it (and
    the redelivery is recognised as a duplicate). A concurrent duplicate blocks on the inbox
    key until the first commits, then sees it. ``prepared``: the delivery's ``prepare`` ran
    already (its batch failed and it is applied alone).
    """
    if spec.statement is not None:
        return (await apply_batch(pool, spec, [delivery]))[0]
    assert spec.handle is not None
    if spec.prepare is not None and prepared is None:
        ready = await prepare(pool, spec, delivery)
        if isinstance(ready, Outcome):
            return ready
        prepared = ready
    async with unit_of_work(pool) as uow:
        pair = (delivery.envelope.event_id, delivery.envelope.order_id)
        if not await _claim(uow, spec, [pair]):
            return Outcome.DUPLICATE
        extra = prepared.value if prepared is not None else None
        if spec.lock_batch is not None and delivery.envelope.order_id is not None:
            extra = await spec.lock_batch(uow, [delivery.envelope.order_id])
        await spec.handle(delivery, uow, extra)
    return Outcome.APPLIED


async def apply_batch(
    pool: asyncpg.Pool,
    spec: HandlerSpec,
    deliveries: Sequence[Delivery],
    prepared: Sequence[Prepared] | None = None,
) -> list[Outcome]:
    """Run ``spec`` for every delivery the inbox does not hold yet, all in one transaction.

    All or nothing: if the handler raises for any delivery, nothing of the batch is applied
    and the exception propagates (the worker then applies the deliveries one by one). A
    duplicate within the batch, or of an earlier delivery, is skipped as with ``apply``.
    A handler with a ``prepare`` step gets ``prepared``, one per delivery: each delivery's
    ``prepare`` ran on its own before (``prepare``), so that a slow one never holds up a batch.
    """
    if (spec.prepare is None) != (prepared is None):
        raise ValueError(f"handler {spec.name!r}: a prepare step needs prepared, one per delivery")
    if prepared is not None and len(prepared) != len(deliveries):
        raise ValueError(f"{len(deliveries)} deliveries, {len(prepared)} prepared")
    if spec.statement is not None:
        return _outcomes(deliveries, await spec.statement(pool, spec.name, deliveries))
    assert spec.handle is not None
    events = sorted({(d.envelope.event_id, d.envelope.order_id) for d in deliveries})
    async with unit_of_work(pool) as uow:
        fresh = await _claim(uow, spec, events)
        locked = None
        if spec.lock_batch is not None:
            order_ids = {o for e, o in events if e in fresh and o is not None}
            if order_ids:
                locked = await spec.lock_batch(uow, sorted(order_ids))
        outcomes = _outcomes(deliveries, fresh)
        for i, (delivery, outcome) in enumerate(zip(deliveries, outcomes, strict=True)):
            if outcome is Outcome.APPLIED:
                extra = prepared[i].value if prepared is not None else locked
                await spec.handle(delivery, uow, extra)
    return outcomes


async def _claim(
    uow: UnitOfWork, spec: HandlerSpec, events: Sequence[tuple[uuid.UUID, uuid.UUID | None]]
) -> set[uuid.UUID]:
    """Claim these sorted (event id, order id) pairs in ``spec``'s inbox, locking their
    rows with the same statement when it declares a ``claim``; the ids claimed now."""
    if spec.claim is not None:
        return await spec.claim(uow, spec.name, events)
    return await inbox.claim_many(uow.conn, spec.name, [e for e, _ in events])


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

"""Applying one delivery to one handler, effectively once (invariant 3).

This is the transport-free core of the worker: the RabbitMQ consumer decodes a message,
calls ``apply`` and acks, retries or dead-letters according to the outcome or the error.
"""

from __future__ import annotations

from enum import StrEnum

import asyncpg

from orderflow.adapters.postgres.uow import unit_of_work
from orderflow.service.registry import Delivery, HandlerSpec

_CLAIM = "INSERT INTO inbox (event_id, handler) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1"
_SEEN = "SELECT 1 FROM inbox WHERE event_id = $1 AND handler = $2"


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    NOTHING_TO_DO = "nothing_to_do"  # ``prepare`` found no work: no transaction was opened


async def apply(pool: asyncpg.Pool, spec: HandlerSpec, delivery: Delivery) -> Outcome:
    """Run ``spec`` for ``delivery`` unless the inbox says it already ran; one transaction.

    The inbox row, the handler's writes and the events it emits commit together, so a crash at
    any point either leaves no trace (and the redelivery applies it) or leaves all of it (and
    the redelivery is recognised as a duplicate). A concurrent duplicate blocks on the inbox
    key until the first commits, then sees it.
    """
    key = (delivery.envelope.event_id, spec.name)
    prepared = None
    if spec.prepare is not None:
        if await pool.fetchval(_SEEN, *key):
            return Outcome.DUPLICATE
        prepared = await spec.prepare(delivery)
        if prepared is None:
            return Outcome.NOTHING_TO_DO
    async with unit_of_work(pool) as uow:
        if not await uow.conn.fetchval(_CLAIM, *key):
            return Outcome.DUPLICATE
        await spec.handle(delivery, uow, prepared)
    return Outcome.APPLIED

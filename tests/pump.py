"""Drive the saga in-process: take an order's unpublished outbox rows and apply each to its
subscribed handlers through the real consumer core (``kernel.consumer.apply``).

This runs the same handlers and transactions as the worker, without the broker hop, so that
handler tests stay fast and deterministic. The broker path is tested end to end elsewhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from orderflow.domain.events import Envelope
from orderflow.kernel.consumer import Outcome, apply
from orderflow.kernel.handlers import Defer, Delivery, Handler, Registry, TransientError

MAX_ATTEMPTS = 5


async def pump(
    pool: asyncpg.Pool, registry: Registry, order_ids: Sequence[uuid.UUID], *, max_rounds: int = 50
) -> list[tuple[str, str, Outcome]]:
    """Apply pending events of ``order_ids`` until none is left; returns what was applied."""
    applied: list[tuple[str, str, Outcome]] = []
    for _ in range(max_rounds):
        rows = await pool.fetch(
            "UPDATE outbox SET published_at = now() WHERE id IN ("
            " SELECT id FROM outbox WHERE published_at IS NULL AND order_id = ANY($1::uuid[])"
            " ORDER BY id) RETURNING id, envelope",
            list(order_ids),
        )
        if not rows:
            return applied
        for row in sorted(rows, key=lambda r: r["id"]):
            envelope = Envelope.model_validate(row["envelope"])
            for spec in registry.subscribers(envelope.type):
                applied.append((envelope.type, spec.name, await deliver(pool, spec, envelope)))
    raise AssertionError("the saga did not settle")


async def deliver(pool: asyncpg.Pool, spec: Handler, envelope: Envelope) -> Outcome:
    """One delivery with the worker's retry semantics (transient -> next attempt)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return await apply(pool, spec, Delivery(envelope, envelope.event(), attempt))
        except TransientError:
            continue
        except Defer:
            continue
    raise AssertionError(f"{spec.name} kept failing on {envelope.type}")

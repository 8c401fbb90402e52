"""Re-drive an order that waits on an event: have the relay publish the event again.

Safe to repeat: a handler that already applied the event finds it in its inbox and drops the
copy (invariant 3), so republishing can never apply anything twice; it only gives a lost or
never-sent message another chance. Replaying an order's dead letters is the other remedy
(``entrypoints.dead_letters``); both are recorded as back-office actions by the caller.
A reconciler that re-drives on its own can call ``republish_event`` the same way.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

import asyncpg

from orderflow.domain.errors import NotFound


class Republished(StrEnum):
    """What ``republish_event`` did."""

    QUEUED = "queued"  # marked unpublished: the relay publishes it again
    ALREADY_WAITING = "already_waiting"  # never published yet: the relay was nudged


async def republish_event(pool: asyncpg.Pool, *, event_id: uuid.UUID) -> Republished:
    """Mark an outbox event unpublished so that the relay sends it again, and wake the relay;
    NotFound when the outbox no longer holds it (pruned after ``outbox_retention_s``)."""
    async with pool.acquire() as conn, conn.transaction():
        published = await conn.fetchrow(
            "SELECT published_at FROM outbox WHERE event_id = $1 FOR UPDATE", event_id
        )
        if published is None:
            raise NotFound(f"event {event_id} is not in the outbox (pruned, or never written)")
        if published["published_at"] is not None:
            await conn.execute(
                "UPDATE outbox SET published_at = NULL WHERE event_id = $1", event_id
            )
        await conn.execute("SELECT pg_notify('orderflow_outbox', '')")
    if published["published_at"] is None:
        return Republished.ALREADY_WAITING
    return Republished.QUEUED

"""Why is this order stuck: where an order that is not terminal waits, from the facts.

The facts are the order's events as the outbox holds them, which handlers applied each one
(the inbox), its dead letters, its SLA mark and its status. Each reason says what it saw,
since when, and whether the back office can fix it safely (``remedy``):

- ``republish``: an event the relay has not published, or one published whose handler never
  got it (a lost message); publishing it again is safe, the inbox drops a duplicate.
- ``replay``: a dead letter of the order; replaying sends it back to its handler.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from orderflow.domain.orders import OrderStatus
from orderflow.operations.backoffice import Dossier

S = OrderStatus
# Not part of the order's progress: an unapplied notification never holds an order back.
BYSTANDERS = frozenset({"notifications.send"})
# Steps a person (or their system) takes; the autopilot stands in for them in a demo.
PEOPLE = {
    S.AWAITING_PAYMENT: "the customer to pay (POST /orders/{id}/pay), or the unpaid-order expiry",
    S.RESERVED: "the warehouse to prepare it (staff: prepare)",
    S.PREPARED: "the carrier to collect it (staff: ship)",
    S.SHIPPED: "the carrier to confirm delivery (staff: deliver)",
}
# An event younger than this may simply be on its way.
IN_FLIGHT = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class Reason:
    """One thing an order waits on."""

    code: str  # unpublished | not_applied | dead_lettered | waiting_for_person | overdue
    text: str
    since: datetime | None = None
    remedy: str | None = None  # republish | replay | None
    event_id: str | None = None
    handler: str | None = None
    queue: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def diagnose(
    dossier: Dossier,
    *,
    bindings: Mapping[str, Iterable[str]],
    dead_letters: Iterable[Mapping[str, Any]],
    queue_of: Mapping[str, str],
) -> list[Reason]:
    """Where the order waits and why (empty for a terminal order or one on its way).

    ``bindings``: handler -> the event types it consumes; ``dead_letters``: this order's
    (``handler``, ``event_type``, ``error``, ``message_id``, ``failed_at``); ``queue_of``:
    handler -> its work queue.
    """
    status = dossier.order.status
    if status in (S.DELIVERED, S.CANCELLED):
        return []
    reasons: list[Reason] = []
    dead = list(dead_letters)
    for letter in dead:
        reasons.append(
            Reason(
                code="dead_lettered",
                text=f"{letter['event_type']} was dead-lettered by {letter['handler']}: "
                f"{letter['error']}",
                since=letter.get("failed_at"),
                remedy="replay",
                event_id=letter.get("message_id"),
                handler=letter.get("handler"),
            )
        )
    dead_pairs = {(d.get("message_id"), d.get("handler")) for d in dead}
    for row in dossier.outbox:
        event_id = str(row["event_id"])
        age = dossier.now - row["created_at"]
        if row["published_at"] is None:
            if age > IN_FLIGHT:
                reasons.append(
                    Reason(
                        code="unpublished",
                        text=f"{row['event_type']} is in the outbox, not yet published: "
                        "is the relay running?",
                        since=row["created_at"],
                        remedy="republish",
                        event_id=event_id,
                    )
                )
            continue
        done = set(dossier.applied.get(event_id, ()))
        for handler, types in bindings.items():
            if handler in BYSTANDERS or row["event_type"] not in types or handler in done:
                continue
            if (event_id, handler) in dead_pairs or dossier.now - row["published_at"] < IN_FLIGHT:
                continue
            queue = queue_of.get(handler)
            reasons.append(
                Reason(
                    code="not_applied",
                    text=f"{row['event_type']} was published but {handler} has not applied "
                    f"it: waiting in {queue} or for a scheduled retry, or the message was lost",
                    since=row["published_at"],
                    remedy="republish",
                    event_id=event_id,
                    handler=handler,
                    queue=queue,
                )
            )
    if status in PEOPLE and not reasons:
        since = dossier.order.updated_at
        reasons.append(
            Reason(code="waiting_for_person", text=f"waits for {PEOPLE[status]}", since=since)
        )
    if dossier.overdue:
        reasons.append(
            Reason(
                code="overdue",
                text=f"overdue: {status.value} since {dossier.overdue['since']:%Y-%m-%d %H:%M:%S}, "
                f"due by {dossier.overdue['due_at']:%Y-%m-%d %H:%M:%S}",
                since=dossier.overdue["due_at"],
            )
        )
    return reasons


_UNPUBLISHED = """
SELECT x.order_id, o.status, x.since, x.event_type
FROM (
    SELECT order_id, min(created_at) AS since, (array_agg(event_type ORDER BY id))[1] AS event_type
    FROM outbox
    WHERE published_at IS NULL AND order_id IS NOT NULL AND created_at < now() - $1::interval
    GROUP BY order_id
) x JOIN orders o ON o.id = x.order_id
ORDER BY x.since LIMIT $2
"""
# The last event of each order that has been still for a while, when a saga handler consumes
# its type and none has applied it (notifications never hold an order back).
_NOT_APPLIED = """
SELECT o.id AS order_id, o.status, last.published_at AS since, last.event_type
FROM orders o
CROSS JOIN LATERAL (
    SELECT event_id, event_type, published_at FROM outbox
    WHERE order_id = o.id ORDER BY id DESC LIMIT 1
) last
WHERE o.status <> ALL($1::text[]) AND o.updated_at < now() - $2::interval
  AND last.published_at IS NOT NULL AND last.published_at < now() - $2::interval
  AND last.event_type = ANY($3::text[])
  AND NOT EXISTS (
      SELECT 1 FROM inbox i WHERE i.event_id = last.event_id AND i.handler <> ALL($4::text[])
  )
ORDER BY last.published_at LIMIT $5
"""


async def stuck_orders(
    pool: asyncpg.Pool,
    *,
    consumed: Iterable[str],
    still_for: timedelta = timedelta(seconds=30),
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Orders that wait on the machinery, oldest first: an event unpublished for over
    ``IN_FLIGHT``, or a last event (of a type in ``consumed``: what saga handlers take)
    published but applied by no handler for ``still_for``. Dead letters and SLA marks are
    the caller's to add (they live in the broker and in ``order_overdue``)."""
    terminal = [S.DELIVERED.value, S.CANCELLED.value]
    async with pool.acquire() as conn:
        unpublished = await conn.fetch(_UNPUBLISHED, IN_FLIGHT, limit)
        lost = await conn.fetch(
            _NOT_APPLIED, terminal, still_for, list(consumed), list(BYSTANDERS), limit
        )
    found = [
        {
            "order_id": str(r["order_id"]),
            "status": r["status"],
            "since": r["since"],
            "code": "unpublished",
            "text": f"{r['event_type']} is in the outbox, not yet published",
        }
        for r in unpublished
    ]
    found += [
        {
            "order_id": str(r["order_id"]),
            "status": r["status"],
            "since": r["since"],
            "code": "not_applied",
            "text": f"{r['event_type']} was published but no handler has applied it",
        }
        for r in lost
    ]
    return found

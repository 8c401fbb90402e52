"""Notifications: who hears about which step, recorded once per (event, recipient)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import partial

import asyncpg

from orderflow.domain import saga
from orderflow.domain.saga import RECIPIENTS
from orderflow.kernel.handlers import Delivery, Handler, StatementStep
from orderflow.kernel.inbox import claimed_cte
from orderflow.notifications.senders import Notification, NotificationSender

# The deliveries' inbox claim and their notifications, in one statement (one transaction):
# the notifications of the events claimed now, each (event, recipient) once.
_CLAIM_AND_RECORD = f"""
WITH {claimed_cte(1)}, wanted AS (
    SELECT * FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[])
        AS n(event_id, order_id, recipient, subject)
), recorded AS (
    INSERT INTO notifications (order_id, event_id, recipient, channel, subject, sent_at)
    SELECT w.order_id, w.event_id, w.recipient, $7, w.subject, now()
    FROM wanted w JOIN claimed c ON c.event_id = w.event_id
    ON CONFLICT (event_id, recipient) DO NOTHING
    RETURNING event_id, recipient
)
SELECT c.event_id, r.recipient FROM claimed c LEFT JOIN recorded r ON r.event_id = c.event_id
"""


def notifications_for(d: Delivery) -> list[Notification]:
    """Who hears about this event, and what."""
    return [
        Notification(
            order_id=d.envelope.order_id,
            event_id=d.envelope.event_id,
            recipient=recipient,
            subject=subject,
        )
        for recipient, subject in RECIPIENTS.get(d.envelope.type, ())
    ]


async def record_notifications(
    pool: asyncpg.Pool, handler: str, deliveries: Sequence[Delivery], *, sender: NotificationSender
) -> set[uuid.UUID]:
    """Claim the deliveries and record their notifications in one statement, then send those
    recorded now; the event ids claimed now."""
    wanted = {(n.event_id, n.recipient): n for d in deliveries for n in notifications_for(d)}
    rows = await pool.fetch(
        _CLAIM_AND_RECORD,
        sorted({d.envelope.event_id for d in deliveries}),
        handler,
        [n.event_id for n in wanted.values()],
        [n.order_id for n in wanted.values()],
        [n.recipient for n in wanted.values()],
        [n.subject for n in wanted.values()],
        sender.channel,
    )
    for row in rows:
        if row["recipient"] is not None:
            await sender.send(wanted[(row["event_id"], row["recipient"])])
    return {row["event_id"] for row in rows}


def handlers(sender: NotificationSender, *, batch_window_s: float = 0.0) -> list[Handler]:
    """The notification step, sending through ``sender``; its batches linger
    ``batch_window_s`` for more deliveries (no step of the saga waits for a notification).

    One statement per batch: notifications of different events never contend, and they are 6
    of the 13 deliveries of a delivered order. The sender (the log) sends once the record is
    committed. Outgoing HTTP is the webhook subscriptions' (``notifications.webhooks``).
    """
    return [
        StatementStep(
            saga.NOTIFICATIONS_SEND,
            apply=partial(record_notifications, sender=sender),
            window_s=batch_window_s,
        )
    ]

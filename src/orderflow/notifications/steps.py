"""Notifications: who hears about which step, recorded once per (event, recipient)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import MappingProxyType
from typing import Final

import asyncpg

from orderflow.domain import events as ev
from orderflow.kernel.handlers import Delivery, HandlerSpec
from orderflow.kernel.inbox import claimed_cte
from orderflow.notifications.senders import Notification, NotificationSender

# event type -> (recipient, subject) pairs. Every event type must have a subscriber somewhere:
# the relay treats an unroutable event as an error (a test checks the registry covers all).
RECIPIENTS: Final = MappingProxyType(
    {
        ev.OrderPlaced.TYPE: (("customer", "We received your order"),),
        ev.PaymentFailed.TYPE: (("customer", "Your payment was declined: please pay again"),),
        ev.OrderPaid.TYPE: (("customer", "Payment received"),),
        ev.InventoryChecked.TYPE: (("warehouse", "Order ready to prepare"),),
        ev.InventoryInsufficient.TYPE: (("supplier", "Restock needed"),),
        ev.OrderPrepared.TYPE: (("carrier", "Parcel ready for pick-up"),),
        ev.OrderShipped.TYPE: (("customer", "Your order has shipped"),),
        ev.OrderDelivered.TYPE: (("customer", "Your order was delivered"),),
        ev.OrderCancelled.TYPE: (("customer", "Your order was cancelled"),),
        ev.PaymentRefunded.TYPE: (("customer", "Your payment was refunded"),),
        ev.InventoryReleased.TYPE: (("warehouse", "Reserved stock returned to the shelf"),),
    }
)


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


def handlers(sender: NotificationSender, *, batch_window_s: float = 0.0) -> list[HandlerSpec]:
    """The notification handler, sending through ``sender``; its batches linger
    ``batch_window_s`` for more deliveries (no step of the saga waits for a notification)."""

    async def notify(
        pool: asyncpg.Pool, handler: str, deliveries: Sequence[Delivery]
    ) -> set[uuid.UUID]:
        """Claim the deliveries and record their notifications, then send those recorded."""
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

    # One statement per batch: notifications of different events never contend, and they
    # are 6 of the 13 deliveries of a delivered order. The sender (the log) sends once the
    # record is committed. Outgoing HTTP is the webhook subscriptions' (service.webhooks).
    return [
        HandlerSpec(
            "notifications.send",
            tuple(RECIPIENTS),
            None,
            batch=True,
            statement=notify,
            batch_window_s=batch_window_s,
        )
    ]

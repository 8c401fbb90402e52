"""Notifications: who hears about which step, recorded once per (event, recipient)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from orderflow.adapters.postgres.uow import UnitOfWork
from orderflow.domain import events as ev
from orderflow.service.ports import Notification, NotificationSender
from orderflow.service.registry import Delivery, HandlerSpec

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


def handlers(sender: NotificationSender) -> list[HandlerSpec]:
    """The notification handler, sending through ``sender``."""

    async def notify(d: Delivery, uow: UnitOfWork, _: object) -> None:
        for recipient, subject in RECIPIENTS.get(d.envelope.type, ()):
            inserted = await uow.conn.fetchval(
                "INSERT INTO notifications (order_id, event_id, recipient, channel, subject, "
                "sent_at) VALUES ($1, $2, $3, $4, $5, now()) "
                "ON CONFLICT (event_id, recipient) DO NOTHING RETURNING 1",
                d.envelope.order_id,
                d.envelope.event_id,
                recipient,
                sender.channel,
                subject,
            )
            if inserted:
                await sender.send(
                    Notification(
                        order_id=d.envelope.order_id,
                        event_id=d.envelope.event_id,
                        recipient=recipient,
                        subject=subject,
                    )
                )

    # Batched: notifications of different events never contend, and they are 6 of the 14
    # deliveries of a delivered order.
    return [HandlerSpec("notifications.send", tuple(RECIPIENTS), notify, batch=True)]

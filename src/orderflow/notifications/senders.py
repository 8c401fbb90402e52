"""The notification sender: a structured log line per notification. Outgoing HTTP goes through
webhook subscriptions instead (``orderflow.notifications.webhooks``, docs/webhooks.md)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import structlog


@dataclass(frozen=True, slots=True)
class Notification:
    order_id: uuid.UUID | None
    event_id: uuid.UUID
    recipient: str  # customer, supplier, carrier, warehouse
    subject: str

    @property
    def key(self) -> str:
        """Idempotency key: one notification per (event, recipient)."""
        return f"{self.event_id}:{self.recipient}"


class NotificationSender(Protocol):
    """Delivers a notification to its recipient (log, e-mail, webhook...).

    A ``local`` sender (a log line) is cheap and cannot fail on its own, so it may run inside
    the handler's transaction and in batches; any other is called before the transaction
    opens, like the payment gateway, and must accept being called again for the same
    notification (``Notification.key`` identifies it).
    """

    channel: str
    local: bool

    async def send(self, notification: Notification) -> None:
        """Deliver one notification; raise ``TransientError`` to be retried."""
        ...


log = structlog.get_logger("orderflow.notifications")


class LogSender:
    """Logs each notification; the record in PostgreSQL is the durable trace."""

    channel = "log"
    local = True

    async def send(self, notification: Notification) -> None:
        """Log one notification."""
        log.info(
            "notification",
            recipient=notification.recipient,
            subject=notification.subject,
            order_id=str(notification.order_id),
            event_id=str(notification.event_id),
        )

"""The notification sender: a structured log line per notification. Outgoing HTTP goes through
webhook subscriptions instead (``orderflow.service.webhooks``, docs/webhooks.md)."""

from __future__ import annotations

import structlog

from orderflow.service.ports import Notification

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

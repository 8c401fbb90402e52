"""Notification senders: a structured log line per notification (the default), or an HTTP
webhook (``ORDERFLOW_NOTIFICATION_WEBHOOK_URL``)."""

from __future__ import annotations

import httpx
import structlog

from orderflow.service.ports import Notification
from orderflow.service.registry import PermanentError, TransientError

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


class WebhookSender:
    """POSTs each notification as JSON to one URL, with an ``Idempotency-Key`` header.

    Retries are the worker's (retry queues with growing delays, then the dead letters): a
    timeout, a connection failure, a 429 or a 5xx raises ``TransientError``; any other
    non-2xx answer is the receiver refusing the notification: ``PermanentError``.
    """

    channel = "webhook"
    local = False

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self._client = client
        self._url = url

    async def send(self, notification: Notification) -> None:
        """Deliver one notification; the receiver deduplicates by its key."""
        body = {
            "event_id": str(notification.event_id),
            "order_id": str(notification.order_id) if notification.order_id else None,
            "recipient": notification.recipient,
            "subject": notification.subject,
        }
        try:
            response = await self._client.post(
                self._url, json=body, headers={"Idempotency-Key": notification.key}
            )
        except httpx.HTTPError as exc:  # timeouts and connection failures
            raise TransientError(f"notification webhook unreachable: {exc!r}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"notification webhook answered {response.status_code}")
        if not response.is_success:
            raise PermanentError(f"notification webhook refused it: {response.status_code}")

"""Ports: what the service layer needs from the outside world, implemented by adapters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """The gateway's answer to a charge: captured with a reference, or declined with a reason."""

    captured: bool
    reference: str = ""
    decline_reason: str = ""


class PaymentGateway(Protocol):
    """A payment provider. Calls carry an idempotency key: repeating one never charges twice.

    Transient trouble (timeouts, the provider being down) raises ``TransientError``.
    """

    async def charge(
        self, *, idempotency_key: str, token: str, amount: int, currency: str, attempt: int
    ) -> ChargeResult:
        """Capture ``amount`` with the payment method ``token``."""
        ...

    async def refund(
        self, *, idempotency_key: str, reference: str, amount: int, currency: str
    ) -> str:
        """Return ``amount`` of the capture ``reference``; returns the refund's reference."""
        ...


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

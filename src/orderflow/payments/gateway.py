"""The payment gateway port: what the payment steps need from a provider. The payment is
authorized first (``payment.initiated``), captured once stock is reserved
(``inventory.checked``), and voided if the order is cancelled before the capture, refunded
after it. ``HttpGateway`` (``payments.provider``) reaches ``orderflow gateway`` over HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class AuthorizationStatus(StrEnum):
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    PENDING = "pending"  # the provider answers later, by webhook


@dataclass(frozen=True, slots=True)
class Authorization:
    """The gateway's answer to an authorization: its reference (the payment intent), and a
    decline's reason."""

    status: AuthorizationStatus
    reference: str
    decline_reason: str = ""


class PaymentGateway(Protocol):
    """A payment provider. Writes carry an idempotency key: repeating one never moves money
    twice. Transient trouble (timeouts, the provider down) raises ``TransientError``."""

    async def authorize(
        self,
        *,
        idempotency_key: str,
        token: str,
        amount: int,
        currency: str,
        metadata: dict[str, str],
    ) -> Authorization:
        """Authorize ``amount`` with the payment method ``token``."""
        ...

    async def capture(self, *, idempotency_key: str, reference: str) -> bool:
        """Capture an authorization; False when it can no longer be captured (voided)."""
        ...

    async def void(self, *, idempotency_key: str, reference: str) -> bool:
        """Release an authorization; False when it was captured meanwhile (refund it)."""
        ...

    async def refund(self, *, idempotency_key: str, reference: str) -> str:
        """Refund a capture in full; returns the refund's reference."""
        ...

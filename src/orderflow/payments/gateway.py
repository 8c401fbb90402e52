"""The payment gateway port: what the payment steps need from a provider (the simulator
implements it)."""

from __future__ import annotations

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

"""Moving the money an authorization holds: capture it once the order's stock is reserved
(``inventory.checked``), release it when the order is cancelled (``order.cancelled``, or an
authorization that arrived after the cancellation): void it if it was not captured, refund it
if it was. Each gateway call is idempotent under the payment's key for that operation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from orderflow.domain import events as ev
from orderflow.kernel.handlers import Delivery
from orderflow.kernel.uow import UnitOfWork
from orderflow.ordering import annotate, lock_order
from orderflow.payments import store as payments
from orderflow.payments.attempts import gateway_key
from orderflow.payments.calls import order_id_of, within
from orderflow.payments.gateway import PaymentGateway


def _moved(
    payment: payments.Payment, status: str, kind: str, reference: str | None = None
) -> payments.Settlement:
    """``payment`` moved to ``status`` with its history row of ``kind``, which names the
    gateway's object: the refund's reference, else the payment intent's."""
    return payments.Settlement(
        payment,
        status=status,
        kind=kind,
        idempotency_key=gateway_key(kind, payment.id),
        reference=reference or payment.gateway_reference,
    )


async def call_capture(
    d: Delivery, *, pool: asyncpg.Pool, gateway: PaymentGateway, timeout_s: float
) -> payments.Payment | None:
    """inventory.checked, outside any transaction: capture the order's authorization; None
    when there is none to capture, or the gateway can no longer capture it (voided)."""
    payment = await payments.holding(pool, order_id_of(d))
    if payment is None or payment.status != "authorized" or payment.gateway_reference is None:
        return None
    capture = gateway.capture(
        idempotency_key=gateway_key("capture", payment.id), reference=payment.gateway_reference
    )
    return payment if await within(timeout_s, capture, "capture") else None


async def record_captures(uow: UnitOfWork, answered: Sequence[tuple[Delivery, object]]) -> None:
    """Record the captures (one statement); a payment that moved meanwhile (released by a
    cancellation, which then recorded the capture itself) is left as it is."""
    captured: dict[uuid.UUID, payments.Settlement] = {}
    for _, payment in answered:
        assert isinstance(payment, payments.Payment)
        captured.setdefault(payment.id, _moved(payment, "captured", "capture"))
    await payments.settle_many(uow.conn, list(captured.values()))


@dataclass(frozen=True, slots=True)
class Release:
    payment_id: uuid.UUID
    voided: bool  # else refunded
    reference: str | None  # the refund's


async def call_release(
    d: Delivery, *, pool: asyncpg.Pool, gateway: PaymentGateway, timeout_s: float
) -> Release | None:
    """order.cancelled / payment.processed_after_cancel, outside any transaction: void the
    order's authorization, or refund it if it was captured (also when the void finds it
    captured meanwhile); None when no money is held. Both events are about a cancelled
    order, and cancelled is terminal, so the order's status needs no read."""
    payment = await payments.holding(pool, order_id_of(d))
    if payment is None or payment.gateway_reference is None:
        return None
    reference = payment.gateway_reference
    if payment.status == "authorized":
        void = gateway.void(idempotency_key=gateway_key("void", payment.id), reference=reference)
        if await within(timeout_s, void, "void"):
            return Release(payment.id, voided=True, reference=None)
    refund = gateway.refund(idempotency_key=gateway_key("refund", payment.id), reference=reference)
    return Release(payment.id, voided=False, reference=await within(timeout_s, refund, "refund"))


async def record_releases(uow: UnitOfWork, answered: Sequence[tuple[Delivery, object]]) -> None:
    """Record the voids and refunds of cancelled orders and announce them (once per payment).
    A refund of a payment still recorded as authorized (captured at the gateway before the
    capture step recorded it) records the capture first."""
    for d, release in answered:
        assert isinstance(release, Release)
        order = await lock_order(uow, order_id_of(d))
        payment = await payments.get(uow.conn, release.payment_id, lock=True)
        if payment is None or payment.status not in {"authorized", "captured"}:
            continue
        if release.voided:
            await payments.settle(uow.conn, _moved(payment, "voided", "void"))
            event: ev.Event = ev.PaymentVoided(
                payment_id=payment.id,
                amount=payment.amount,
                currency=payment.currency,
                reason=order.cancel_reason or "cancelled",
            )
        else:
            if payment.status == "authorized":
                await payments.settle(uow.conn, _moved(payment, "captured", "capture"))
                payment = await payments.get(uow.conn, payment.id)
                assert payment is not None
            await payments.settle(
                uow.conn, _moved(payment, "refunded", "refund", release.reference)
            )
            event = ev.PaymentRefunded(
                payment_id=payment.id,
                amount=payment.amount,
                currency=payment.currency,
                reason=order.cancel_reason or "cancelled",
            )
        annotate(uow, order, event, actor="compensation", cause=d.envelope)

"""The payment steps of the saga: start the payment of a placed order, charge it at the gateway,
mark the order paid, refund a cancelled order's capture.

Each step is a named function; ``handlers`` binds them to the gateway and the pool.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Sequence
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

import asyncpg

from orderflow.domain import events as ev
from orderflow.domain import saga
from orderflow.domain.orders import OrderStatus as S
from orderflow.kernel.batching import Lookup
from orderflow.kernel.handlers import (
    CallStep,
    Delivery,
    Handler,
    TransactionStep,
    TransientError,
)
from orderflow.kernel.uow import UnitOfWork
from orderflow.ordering import (
    Step,
    advance,
    annotate,
    claim_and_lock_orders,
    emit_off_timeline,
    lock_order,
    status_step,
)
from orderflow.payments import store as payments
from orderflow.payments.attempts import announce_payment, charge_key, refund_key
from orderflow.payments.gateway import ChargeResult, PaymentGateway

ACTOR = "payments"
T = TypeVar("T")


async def initiate_payments(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """order.created: register a payment for each order still created, charged to the payment
    method it came with (one statement for the batch), and announce it."""
    orders = [await lock_order(uow, _order_id(d)) for d in deliveries]  # locked by the claim
    created = [o.id for o in orders if o.status is S.CREATED]
    opened = await payments.insert_for(uow.conn, created) if created else {}
    for d, order in zip(deliveries, orders, strict=True):
        if order.status is S.CREATED:  # else cancelled meanwhile, or a copy
            announce_payment(uow, order, opened.get(order.id), actor=ACTOR, cause=d.envelope)


async def call_gateway(
    d: Delivery,
    *,
    gateway: PaymentGateway,
    payment_of: Lookup[uuid.UUID, payments.Payment],
    timeout_s: float,
) -> tuple[payments.Payment, ChargeResult] | None:
    """payment.initiated, outside any transaction: charge the payment, with a timeout,
    idempotently; None when it is no longer pending."""
    event = d.event
    assert isinstance(event, ev.PaymentInitiated)
    payment = await payment_of.get(event.payment_id)
    if payment is None or payment.status != "pending":
        return None
    charge = gateway.charge(
        idempotency_key=charge_key(payment.id),
        token=payment.payment_token,
        amount=payment.amount,
        currency=payment.currency,
        attempt=d.attempt,
    )
    result = await _within(timeout_s, charge, "charge")
    return payment, result


class Record(StrEnum):
    """How a charge's event is recorded on its order."""

    ADVANCE = "advance"  # it moves the order (a decline of a pending order)
    ANNOTATE = "annotate"  # on the timeline, the status unchanged (a capture)
    PUBLISH = "publish"  # through the outbox only (a decline the order no longer waits for)


def charge_event(
    status: S, payment: payments.Payment, result: ChargeResult
) -> tuple[ev.Event, Record]:
    """The event a settled charge makes, given its order's status, and how it is recorded.

    A capture on an order cancelled meanwhile has its own event, which compensation refunds
    (ADR 0016); a cancellation after this commit finds the capture and refunds it itself.
    """
    if result.captured:
        capture = ev.PaymentProcessedAfterCancel if status is S.CANCELLED else ev.PaymentProcessed
        processed = capture(
            payment_id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            gateway_reference=result.reference,
        )
        return processed, Record.ANNOTATE
    failed = ev.PaymentFailed(payment_id=payment.id, reason=result.decline_reason)
    return failed, Record.ADVANCE if status is S.PAYMENT_PENDING else Record.PUBLISH


def _settlement(payment: payments.Payment, result: ChargeResult) -> payments.Settlement:
    if result.captured:
        return payments.Settlement(
            payment,
            status="captured",
            kind="charge",
            idempotency_key=charge_key(payment.id),
            reference=result.reference,
        )
    return payments.Settlement(
        payment,
        status="declined",
        kind="decline",
        idempotency_key=charge_key(payment.id),
        reference=None,
        detail=result.decline_reason,
    )


async def record_charges(uow: UnitOfWork, answered: Sequence[tuple[Delivery, object]]) -> None:
    """payment.initiated: settle every payment still pending with one statement, then announce
    each one settled, in delivery order, from its locked order. A payment settled meanwhile
    (a concurrent delivery) gets no event; a second answer for one payment is dropped."""
    planned: dict[uuid.UUID, tuple[Delivery, payments.Payment, ChargeResult]] = {}
    for d, answer in answered:
        assert isinstance(answer, tuple)
        payment, result = answer
        planned.setdefault(payment.id, (d, payment, result))
    settled = await payments.settle_many(
        uow.conn, [_settlement(payment, result) for _, payment, result in planned.values()]
    )
    for d, payment, result in planned.values():
        if payment.id not in settled:
            continue
        order = await lock_order(uow, _order_id(d))  # locked by the claim: no query
        event, record = charge_event(order.status, payment, result)
        if record is Record.ADVANCE:
            advance(uow, order, event, actor=ACTOR, cause=d.envelope)
        elif record is Record.ANNOTATE:
            annotate(uow, order, event, actor=ACTOR, cause=d.envelope)
        else:
            emit_off_timeline(uow, order, event, actor=ACTOR, cause=d.envelope)


async def call_refund(
    d: Delivery, *, pool: asyncpg.Pool, gateway: PaymentGateway, timeout_s: float
) -> tuple[uuid.UUID, str] | None:
    """order.cancelled / payment.processed_after_cancel, outside any transaction: refund the
    order's capture, idempotently; None when there is none. Both events are about a cancelled
    order, and cancelled is terminal, so the order's status needs no read."""
    payment = await payments.captured(pool, _order_id(d))
    if payment is None or payment.gateway_reference is None:
        return None
    refund = gateway.refund(
        idempotency_key=refund_key(payment.id),
        reference=payment.gateway_reference,
        amount=payment.amount,
        currency=payment.currency,
    )
    ref = await _within(timeout_s, refund, "refund")
    return payment.id, ref


async def record_refunds(uow: UnitOfWork, answered: Sequence[tuple[Delivery, object]]) -> None:
    """Record the refunds of cancelled orders and announce them (once per payment)."""
    for d, answer in answered:
        assert isinstance(answer, tuple)
        payment_id, reference = answer
        order = await lock_order(uow, _order_id(d))
        payment = await payments.get(uow.conn, payment_id, lock=True)
        if payment is None or payment.status != "captured":
            continue
        await payments.settle(
            uow.conn,
            payments.Settlement(
                payment,
                status="refunded",
                kind="refund",
                idempotency_key=refund_key(payment.id),
                reference=reference,
            ),
        )
        refunded = ev.PaymentRefunded(
            payment_id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            reason=order.cancel_reason or "cancelled",
        )
        annotate(uow, order, refunded, actor="compensation", cause=d.envelope)


def order_paid(d: Delivery) -> ev.Event:
    """The order.paid that a payment.processed makes of a pending order."""
    event = d.event
    assert isinstance(event, ev.PaymentProcessed)
    return ev.OrderPaid(payment_id=event.payment_id, amount=event.amount, currency=event.currency)


MARK_PAID = {ev.PaymentProcessed.TYPE: Step(S.PAYMENT_PENDING, order_paid)}


def handlers(
    pool: asyncpg.Pool, gateway: PaymentGateway, *, timeout_s: float, read_batch_max: int = 256
) -> list[Handler]:
    """The payment steps, bound to ``gateway``; ``pool`` serves their reads before a
    transaction opens. The charge's reads of its payment are batched: the calls of many
    deliveries run at once under load, and each read would otherwise be a round trip of its
    own (``Lookup``)."""

    async def fetch_payments(ids: list[uuid.UUID]) -> dict[uuid.UUID, payments.Payment]:
        return await payments.get_many(pool, ids)

    payment_of = Lookup(fetch_payments, max_batch=read_batch_max)
    return [
        TransactionStep(
            saga.PAYMENTS_INITIATE, apply=initiate_payments, claim=claim_and_lock_orders
        ),
        CallStep(
            saga.PAYMENTS_CHARGE,
            call=partial(call_gateway, gateway=gateway, payment_of=payment_of, timeout_s=timeout_s),
            record=record_charges,
            claim=claim_and_lock_orders,
        ),
        TransactionStep(
            saga.ORDERS_MARK_PAID,
            apply=status_step(MARK_PAID, actor="orders"),
            claim=claim_and_lock_orders,
        ),
        CallStep(
            saga.COMPENSATION_REFUND,
            call=partial(call_refund, pool=pool, gateway=gateway, timeout_s=timeout_s),
            record=record_refunds,
            claim=claim_and_lock_orders,
            batched=False,
        ),
    ]


async def _within(timeout_s: float, call: Coroutine[Any, Any, T], what: str) -> T:
    """The gateway's answer to ``call``; no answer within ``timeout_s`` is a transient error
    (the delivery is retried, with the same idempotency key)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await call
    except TimeoutError:
        raise TransientError(
            f"payment gateway did not answer the {what} within {timeout_s} s"
        ) from None


def _order_id(d: Delivery) -> uuid.UUID:
    assert d.envelope.order_id is not None
    return d.envelope.order_id

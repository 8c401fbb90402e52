"""The payment steps of the saga: start the payment of a placed order, authorize it at the
gateway, mark the order paid. Capturing after the reservation and releasing a cancelled order's
money are in ``payments.money``; ``handlers`` binds them all to the gateway and the pool.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from enum import StrEnum
from functools import partial

import asyncpg

from orderflow.domain import events as ev
from orderflow.domain import saga
from orderflow.domain.orders import OrderStatus as S
from orderflow.kernel.batching import Lookup
from orderflow.kernel.handlers import CallStep, Delivery, Handler, TransactionStep
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
from orderflow.payments import money
from orderflow.payments import store as payments
from orderflow.payments.attempts import announce_payment, gateway_key
from orderflow.payments.calls import order_id_of as _order_id
from orderflow.payments.calls import within
from orderflow.payments.gateway import Authorization, AuthorizationStatus, PaymentGateway

ACTOR = "payments"


async def initiate_payments(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """order.created: register a payment for each order still created, charged to the payment
    method it came with (one statement for the batch), and announce it."""
    orders = [await lock_order(uow, _order_id(d)) for d in deliveries]  # locked by the claim
    created = [o.id for o in orders if o.status is S.CREATED]
    opened = await payments.insert_for(uow.conn, created) if created else {}
    for d, order in zip(deliveries, orders, strict=True):
        if order.status is S.CREATED:  # else cancelled meanwhile, or a copy
            announce_payment(uow, order, opened.get(order.id), actor=ACTOR, cause=d.envelope)


async def call_authorize(
    d: Delivery,
    *,
    gateway: PaymentGateway,
    payment_of: Lookup[uuid.UUID, payments.Payment],
    timeout_s: float,
) -> tuple[payments.Payment, Authorization] | None:
    """payment.initiated, outside any transaction: authorize the payment, with a timeout,
    idempotently; None when it is no longer pending, or when the gateway answers later (its
    webhook settles the payment: ``payments.webhooks``)."""
    event = d.event
    assert isinstance(event, ev.PaymentInitiated)
    payment = await payment_of.get(event.payment_id)
    if payment is None or payment.status != "pending":
        return None
    authorize = gateway.authorize(
        idempotency_key=gateway_key("authorize", payment.id),
        token=payment.payment_token,
        amount=payment.amount,
        currency=payment.currency,
        metadata={"order_id": str(payment.order_id), "payment_id": str(payment.id)},
    )
    answer = await within(timeout_s, authorize, "authorization")
    if answer.status is AuthorizationStatus.PENDING:
        return None
    return payment, answer


class Record(StrEnum):
    """How an authorization's event is recorded on its order."""

    ADVANCE = "advance"  # it moves the order (a decline of a pending order)
    ANNOTATE = "annotate"  # on the timeline, the status unchanged (an authorization)
    PUBLISH = "publish"  # through the outbox only (a decline the order no longer waits for)


def authorization_event(
    status: S, payment: payments.Payment, answer: Authorization
) -> tuple[ev.Event, Record]:
    """The event a settled authorization makes, given its order's status, and how it is
    recorded. An authorization on an order cancelled meanwhile has its own event, which
    compensation voids (ADR 0016); a cancellation after this commit finds it and voids it."""
    if answer.status is AuthorizationStatus.AUTHORIZED:
        kind = ev.PaymentProcessedAfterCancel if status is S.CANCELLED else ev.PaymentProcessed
        processed = kind(
            payment_id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            gateway_reference=answer.reference,
        )
        return processed, Record.ANNOTATE
    failed = ev.PaymentFailed(payment_id=payment.id, reason=answer.decline_reason)
    return failed, Record.ADVANCE if status is S.PAYMENT_PENDING else Record.PUBLISH


def _settlement(payment: payments.Payment, answer: Authorization) -> payments.Settlement:
    authorized = answer.status is AuthorizationStatus.AUTHORIZED
    return payments.Settlement(
        payment,
        status="authorized" if authorized else "declined",
        kind="authorize" if authorized else "decline",
        idempotency_key=gateway_key("authorize", payment.id),
        reference=answer.reference,
        detail=answer.decline_reason,
    )


Answered = tuple[uuid.UUID, payments.Payment, Authorization, ev.Envelope | None]


async def settle_authorizations(uow: UnitOfWork, answered: Sequence[Answered]) -> None:
    """Settle every payment still pending with one statement, then announce each one settled,
    in order, from its locked order. A payment settled meanwhile (a concurrent delivery, or
    the gateway's webhook) gets no event; a second answer for one payment is dropped."""
    planned: dict[uuid.UUID, Answered] = {}
    for item in answered:
        planned.setdefault(item[1].id, item)
    settled = await payments.settle_many(
        uow.conn, [_settlement(payment, answer) for _, payment, answer, _ in planned.values()]
    )
    for order_id, payment, answer, cause in planned.values():
        if payment.id not in settled:
            continue
        order = await lock_order(uow, order_id)
        event, record = authorization_event(order.status, payment, answer)
        if record is Record.ADVANCE:
            advance(uow, order, event, actor=ACTOR, cause=cause)
        elif record is Record.ANNOTATE:
            annotate(uow, order, event, actor=ACTOR, cause=cause)
        else:
            emit_off_timeline(uow, order, event, actor=ACTOR, cause=cause)


async def record_authorizations(
    uow: UnitOfWork, answered: Sequence[tuple[Delivery, object]]
) -> None:
    """payment.initiated: settle the gateway's answers (``settle_authorizations``)."""
    items: list[Answered] = []
    for d, answer in answered:
        assert isinstance(answer, tuple)
        payment, authorization = answer
        items.append((_order_id(d), payment, authorization, d.envelope))
    await settle_authorizations(uow, items)


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
    transaction opens. The authorization's reads of its payment are batched: the calls of many
    deliveries run at once under load, and each read would otherwise be a round trip of its
    own (``Lookup``)."""

    async def fetch_payments(ids: list[uuid.UUID]) -> dict[uuid.UUID, payments.Payment]:
        return await payments.get_many(pool, ids)

    payment_of = Lookup(fetch_payments, max_batch=read_batch_max)
    call = partial(call_authorize, gateway=gateway, payment_of=payment_of, timeout_s=timeout_s)
    return [
        TransactionStep(
            saga.PAYMENTS_INITIATE, apply=initiate_payments, claim=claim_and_lock_orders
        ),
        CallStep(
            saga.PAYMENTS_CHARGE,
            call=call,
            record=record_authorizations,
            claim=claim_and_lock_orders,
        ),
        TransactionStep(
            saga.ORDERS_MARK_PAID,
            apply=status_step(MARK_PAID, actor="orders"),
            claim=claim_and_lock_orders,
        ),
        CallStep(
            saga.PAYMENTS_CAPTURE,
            call=partial(money.call_capture, pool=pool, gateway=gateway, timeout_s=timeout_s),
            record=money.record_captures,
            claim=claim_and_lock_orders,
        ),
        CallStep(
            saga.COMPENSATION_REFUND,
            call=partial(money.call_release, pool=pool, gateway=gateway, timeout_s=timeout_s),
            record=money.record_releases,
            claim=claim_and_lock_orders,
            batched=False,
        ),
    ]

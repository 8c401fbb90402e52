"""Payment steps of the saga: start a payment, charge it, mark the order paid, refund."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from orderflow.domain import events as ev
from orderflow.domain.idempotency import IdempotentRequest
from orderflow.domain.model import Order
from orderflow.domain.orders import OrderStatus as S
from orderflow.kernel.batching import Lookup
from orderflow.kernel.handlers import Delivery, HandlerSpec, PermanentError, TransientError
from orderflow.kernel.uow import UnitOfWork
from orderflow.ordering import (
    Step,
    act_on_order,
    advance,
    annotate,
    claim_and_lock_orders,
    lock_order,
    publish,
    status_step,
)
from orderflow.payments import store as payments
from orderflow.payments.gateway import ChargeResult, PaymentGateway

ACTOR = "payments"


def charge_key(payment_id: uuid.UUID) -> str:
    """Idempotency key of the (single) charge of a payment attempt."""
    return f"charge:{payment_id}"


def refund_key(payment_id: uuid.UUID) -> str:
    """Idempotency key of the (single) refund of a payment."""
    return f"refund:{payment_id}"


async def start_payment(
    uow: UnitOfWork,
    order: Order,
    *,
    token: str | None,
    actor: str,
    cause: ev.Envelope | None = None,
) -> None:
    """Register a payment attempt for a locked order and announce ``payment.initiated``;
    ``token`` None charges the payment method the order came with."""
    payment = await payments.insert(
        uow.conn, order_id=order.id, token=token, amount=order.total, currency=order.currency
    )
    announce_payment(uow, order, payment, actor=actor, cause=cause)


def announce_payment(
    uow: UnitOfWork,
    order: Order,
    payment: payments.Payment | None,
    *,
    actor: str,
    cause: ev.Envelope | None = None,
) -> None:
    """Move a locked order to payment_pending with ``payment.initiated`` for the payment
    attempt just registered (None: it has no payment method, a permanent error)."""
    if payment is None:
        raise PermanentError(f"order {order.id} has no payment method")
    initiated = ev.PaymentInitiated(
        payment_id=payment.id,
        attempt=payment.attempt,
        amount=payment.amount,
        currency=payment.currency,
    )
    advance(uow, order, initiated, actor=actor, cause=cause)


async def pay_order(
    pool: asyncpg.Pool,
    *,
    order_id: uuid.UUID,
    token: str,
    owner: uuid.UUID | None = None,
    idempotency: IdempotentRequest | None = None,
) -> Order:
    """Pay (or pay again after a decline) with another payment method."""

    async def pay(uow: UnitOfWork, order: Order) -> None:
        await start_payment(uow, order, token=token, actor="customer")

    return await act_on_order(
        pool, order_id=order_id, action=pay, owner=owner, idempotency=idempotency
    )


class _Charges:
    """The charges one transaction records, gathered from its deliveries: before its events
    are written, one statement settles every payment still pending (``settle_many``), then
    each one settled is announced, in the order of the deliveries."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.planned: dict[uuid.UUID, tuple[Delivery, payments.Payment, ChargeResult]] = {}

    def add(self, d: Delivery, payment: payments.Payment, result: ChargeResult) -> None:
        """Record ``result`` for ``payment`` (its order locked) at the next flush; a second
        answer for the same payment in one transaction is dropped, as its settle would find
        it moved."""
        self.uow.before_flush(self.record)
        self.planned.setdefault(payment.id, (d, payment, result))

    async def record(self) -> None:
        planned, self.planned = list(self.planned.values()), {}
        settled = await payments.settle_many(
            self.uow.conn, [_settlement(payment, result) for _, payment, result in planned]
        )
        for d, payment, result in planned:
            if payment.id in settled:
                assert d.envelope.order_id is not None
                order = await lock_order(self.uow, d.envelope.order_id)  # locked: no query
                _announce_charge(self.uow, order, d, payment, result)


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


def _announce_charge(
    uow: UnitOfWork,
    order: Order,
    d: Delivery,
    payment: payments.Payment,
    result: ChargeResult,
) -> None:
    """The event of a settled charge, about its locked order."""
    if result.captured:
        # The order is locked: a cancellation after this commit finds the capture (and
        # refunds it on order.cancelled); one before it gets its own event, the only
        # payment event compensation.refund listens to besides order.cancelled.
        capture = (
            ev.PaymentProcessedAfterCancel if order.status is S.CANCELLED else ev.PaymentProcessed
        )
        processed = capture(
            payment_id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            gateway_reference=result.reference,
        )
        annotate(uow, order, processed, actor=ACTOR, cause=d.envelope)
        return
    failed = ev.PaymentFailed(payment_id=payment.id, reason=result.decline_reason)
    if order.status is S.PAYMENT_PENDING:
        advance(uow, order, failed, actor=ACTOR, cause=d.envelope)
    else:
        publish(uow, order, failed, actor=ACTOR, cause=d.envelope)


def _paid(d: Delivery) -> ev.Event:
    """The order.paid that a payment.processed makes of a pending order."""
    event = d.event
    assert isinstance(event, ev.PaymentProcessed)
    return ev.OrderPaid(payment_id=event.payment_id, amount=event.amount, currency=event.currency)


def handlers(
    pool: asyncpg.Pool, gateway: PaymentGateway, *, timeout_s: float, read_batch_max: int = 256
) -> list[HandlerSpec]:
    """The payment handlers, bound to ``gateway``; ``pool`` serves their reads before a
    transaction opens. The charge's reads of its payment are batched: the prepare steps of
    many deliveries run at once under load, and each read would otherwise be a round trip of
    its own (``Lookup``)."""

    async def fetch_payments(ids: list[uuid.UUID]) -> dict[uuid.UUID, payments.Payment]:
        return await payments.get_many(pool, ids)

    payment_of = Lookup(fetch_payments, max_batch=read_batch_max)

    async def open_payments(uow: UnitOfWork, order_ids: list[uuid.UUID]) -> object:
        """A batch's orders are locked by its claim: register a payment for each one still
        created, charged to the payment method it came with, all with one statement."""
        created = [o for o in order_ids if o in uow.locked and uow.locked[o].status is S.CREATED]
        return await payments.insert_for(uow.conn, created) if created else {}

    async def initiate(d: Delivery, uow: UnitOfWork, opened: object) -> None:
        """order.created: charge the payment method the order came with."""
        assert d.envelope.order_id is not None
        assert isinstance(opened, dict)  # from open_payments
        order = await lock_order(uow, d.envelope.order_id)
        if order.status is not S.CREATED:  # no payment method, or cancelled meanwhile
            return
        announce_payment(uow, order, opened.get(order.id), actor=ACTOR, cause=d.envelope)

    async def call_gateway(d: Delivery) -> tuple[payments.Payment, ChargeResult] | None:
        """Outside any transaction: ask the gateway, with a timeout, idempotently."""
        event = d.event
        assert isinstance(event, ev.PaymentInitiated)
        payment = await payment_of.get(event.payment_id)
        if payment is None or payment.status != "pending":
            return None
        try:
            async with asyncio.timeout(timeout_s):
                result = await gateway.charge(
                    idempotency_key=charge_key(payment.id),
                    token=payment.payment_token,
                    amount=payment.amount,
                    currency=payment.currency,
                    attempt=d.attempt,
                )
        except TimeoutError:
            raise TransientError(f"payment gateway did not answer within {timeout_s} s") from None
        return payment, result

    async def record_charge(d: Delivery, uow: UnitOfWork, prepared: object) -> None:
        """payment.initiated: record the gateway's answer and announce it (``_Charges``).

        The payment as ``call_gateway`` read it is pending; its settle writes only if it still
        is (a concurrent delivery may have recorded it), so no second read is needed.
        """
        assert isinstance(prepared, tuple)
        payment, result = prepared
        assert isinstance(payment, payments.Payment)
        assert isinstance(result, ChargeResult)
        assert d.envelope.order_id is not None
        await lock_order(uow, d.envelope.order_id)
        uow.collector(_Charges).add(d, payment, result)

    async def call_refund(d: Delivery) -> tuple[uuid.UUID, str] | None:
        """Outside any transaction: refund a cancelled order's capture, idempotently.

        Both events it receives are about a cancelled order, and cancelled is terminal, so
        the order's status needs no read."""
        assert d.envelope.order_id is not None
        payment = await payments.captured(pool, d.envelope.order_id)
        if payment is None or payment.gateway_reference is None:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                ref = await gateway.refund(
                    idempotency_key=refund_key(payment.id),
                    reference=payment.gateway_reference,
                    amount=payment.amount,
                    currency=payment.currency,
                )
        except TimeoutError:
            raise TransientError("payment gateway did not answer the refund") from None
        return payment.id, ref

    async def record_refund(d: Delivery, uow: UnitOfWork, result: object) -> None:
        """order.cancelled / payment.processed_after_cancel: record the refund of a
        cancelled order."""
        if not isinstance(result, tuple):
            return
        payment_id: uuid.UUID = result[0]
        reference: str = result[1]
        assert d.envelope.order_id is not None
        order = await lock_order(uow, d.envelope.order_id)
        payment = await payments.get(uow.conn, payment_id, lock=True)
        if payment is None or payment.status != "captured":
            return
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

    return [
        HandlerSpec(
            "payments.initiate",
            (ev.OrderPlaced.TYPE,),
            initiate,
            batch=True,
            claim=claim_and_lock_orders,
            lock_batch=open_payments,
        ),
        HandlerSpec(
            "payments.charge",
            (ev.PaymentInitiated.TYPE,),
            record_charge,
            prepare=call_gateway,
            batch=True,
            claim=claim_and_lock_orders,
        ),
        # payment.processed: the order is paid (unless it was cancelled meanwhile).
        status_step(
            "orders.mark_paid",
            {ev.PaymentProcessed.TYPE: Step(S.PAYMENT_PENDING, _paid)},
            actor="orders",
        ),
        HandlerSpec(
            "compensation.refund",
            (ev.OrderCancelled.TYPE, ev.PaymentProcessedAfterCancel.TYPE),
            record_refund,
            prepare=call_refund,
            claim=claim_and_lock_orders,
        ),
    ]

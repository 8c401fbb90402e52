"""Payment attempts: start one for an order (the saga, or a customer paying again), and the
idempotency keys of their operations at the gateway."""

from __future__ import annotations

import uuid

import asyncpg

from orderflow.domain import events as ev
from orderflow.domain.idempotency import IdempotentRequest
from orderflow.domain.model import Order
from orderflow.kernel.handlers import PermanentError
from orderflow.kernel.uow import UnitOfWork
from orderflow.ordering import act_on_order, advance
from orderflow.payments import store as payments


def gateway_key(operation: str, payment_id: uuid.UUID) -> str:
    """Idempotency key of a payment attempt's (single) ``operation`` at the gateway:
    authorize, capture, void or refund."""
    return f"{operation}:{payment_id}"


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

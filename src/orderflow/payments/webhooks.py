"""The gateway's webhooks: an asynchronous outcome (a ``pm_slow`` authorization) settles the
payment it is about, exactly as the synchronous answer would have. It may arrive before the
worker's call returns, after it, or twice: a payment settles once (``settle_authorizations``
moves only a pending payment), so every copy after the first changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from orderflow.domain.model import Order
from orderflow.kernel.uow import UnitOfWork
from orderflow.ordering import act_on_order
from orderflow.payments import store as payments
from orderflow.payments.gateway import AuthorizationStatus
from orderflow.payments.provider import authorization_of
from orderflow.payments.steps import settle_authorizations

KNOWN = frozenset({"payment_intent.authorized", "payment_intent.declined"})


class UnknownPayment(Exception):
    """The webhook names no payment of ours."""


async def settle_from_webhook(pool: asyncpg.Pool, intent: dict[str, Any]) -> bool:
    """Settle the payment a gateway intent is about; whether it moved the payment."""
    metadata = intent.get("metadata") or {}
    try:
        payment_id = uuid.UUID(str(metadata.get("payment_id")))
        order_id = uuid.UUID(str(metadata.get("order_id")))
        answer = authorization_of(intent)
    except (ValueError, KeyError) as exc:
        raise UnknownPayment(f"not a payment intent of ours: {exc}") from None
    if answer.status is AuthorizationStatus.PENDING:
        return False
    moved = False

    async def settle(uow: UnitOfWork, order: Order) -> None:
        nonlocal moved
        payment = await payments.get(uow.conn, payment_id, lock=True)
        if payment is None or payment.order_id != order.id:
            raise UnknownPayment(f"no payment {payment_id} on order {order.id}")
        if payment.status != "pending":
            return
        if payment.gateway_reference not in (None, answer.reference):
            raise UnknownPayment(f"payment {payment_id} is not intent {answer.reference}")
        await settle_authorizations(uow, [(order.id, payment, answer, None)])
        moved = True

    await act_on_order(pool, order_id=order_id, action=settle)
    return moved

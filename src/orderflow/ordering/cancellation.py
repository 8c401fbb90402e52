"""Cancelling an order on request (a customer's or staff's)."""

from __future__ import annotations

import uuid

import asyncpg

from orderflow.domain import events as ev
from orderflow.domain.idempotency import IdempotentRequest
from orderflow.domain.model import Order
from orderflow.kernel.uow import UnitOfWork
from orderflow.ordering.transitions import act_on_order, advance


async def cancel_order(
    pool: asyncpg.Pool,
    *,
    order_id: uuid.UUID,
    reason: str,
    actor: str = "customer",
    owner: uuid.UUID | None = None,
    idempotency: IdempotentRequest | None = None,
) -> Order:
    """Cancel an order that has not shipped yet; raises IllegalTransition otherwise.

    Compensation (refund, stock release) reacts to the ``order.cancelled`` event.
    """

    async def cancel(uow: UnitOfWork, order: Order) -> None:
        cancelled = ev.OrderCancelled(reason=reason, previous_status=order.status.value)
        advance(uow, order, cancelled, actor=actor, cancel_reason=reason)

    return await act_on_order(
        pool, order_id=order_id, action=cancel, owner=owner, idempotency=idempotency
    )

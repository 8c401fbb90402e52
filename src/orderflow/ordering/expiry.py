"""Unpaid orders expire: an order left awaiting payment too long is cancelled."""

from __future__ import annotations

import asyncpg

from orderflow.domain import events as ev
from orderflow.domain.orders import CancelReason
from orderflow.domain.orders import OrderStatus as S
from orderflow.kernel.uow import unit_of_work
from orderflow.ordering import store as orders
from orderflow.ordering.transitions import advance


async def expire_unpaid(pool: asyncpg.Pool, *, ttl_s: float, batch: int = 100) -> int:
    """Cancel up to ``batch`` orders awaiting payment for longer than ``ttl_s``; the count.

    Rows are claimed with SKIP LOCKED, so several workers may sweep at once.
    """
    async with unit_of_work(pool) as uow:
        ids = await uow.conn.fetch(
            "SELECT id FROM orders WHERE status = $1 "
            "AND updated_at < now() - make_interval(secs => $2) "
            "ORDER BY updated_at LIMIT $3 FOR UPDATE SKIP LOCKED",
            S.AWAITING_PAYMENT.value,
            ttl_s,
            batch,
        )
        reason = CancelReason.PAYMENT_EXPIRED.value
        for row in ids:
            order = await orders.get(uow.conn, row["id"], with_details=False)
            assert order is not None
            cancelled = ev.OrderCancelled(reason=reason, previous_status=order.status.value)
            advance(uow, order, cancelled, actor="expiry", cancel_reason=reason)
    return len(ids)

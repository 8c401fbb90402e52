"""The inventory steps of the saga: reserve every line of a paid order, or none and cancel it;
put a cancelled order's stock back on the shelf.

Each step is a named function over its batch; ``handlers`` binds them to the product cache.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import partial

from orderflow.catalogue import ProductCache
from orderflow.domain import events as ev
from orderflow.domain import saga
from orderflow.domain.orders import CancelReason
from orderflow.domain.orders import OrderStatus as S
from orderflow.inventory import store as inventory
from orderflow.kernel.handlers import Delivery, Handler, TransactionStep
from orderflow.kernel.uow import UnitOfWork
from orderflow.ordering import advance, annotate, claim_and_lock_orders, lock_order

ACTOR = "inventory"


def shortages_of(
    lines: Sequence[inventory.Line], available: dict[uuid.UUID, int]
) -> list[ev.Shortage]:
    """The lines of one order that the stock left to it cannot fill (none: reserve them all)."""
    return [
        ev.Shortage(
            product_id=line.product_id,
            requested=line.requested,
            available=available[line.product_id],
        )
        for line in lines
        if available[line.product_id] < line.requested
    ]


async def reserve_stock(
    uow: UnitOfWork, deliveries: Sequence[Delivery], *, cache: ProductCache | None = None
) -> None:
    """order.paid: reserve all lines of each order or none; a shortage cancels the order (it
    is then refunded). The batch's products are locked in id order and read once; each order
    is checked against what the orders before it in the batch left."""
    order_ids = sorted({_order_id(d) for d in deliveries})
    lines = await inventory.lock_stock_of(uow.conn, order_ids)
    available = {line.product_id: line.available for line in lines}
    by_order: dict[uuid.UUID, list[inventory.Line]] = {}
    for line in lines:
        by_order.setdefault(line.order_id, []).append(line)
    taken: list[inventory.Line] = []
    for d in deliveries:
        order = await lock_order(uow, _order_id(d))  # locked by the claim: no query
        if order.status is not S.PAID:  # cancelled meanwhile, or already handled
            continue
        wants = by_order.get(order.id, [])
        shortages = shortages_of(wants, available)
        if shortages:
            insufficient = ev.InventoryInsufficient(shortages=shortages)
            annotate(uow, order, insufficient, actor=ACTOR, cause=d.envelope)
            reason = CancelReason.OUT_OF_STOCK.value
            cancelled = ev.OrderCancelled(reason=reason, previous_status=order.status.value)
            advance(uow, order, cancelled, actor=ACTOR, cause=d.envelope, cancel_reason=reason)
            continue
        for line in wants:
            available[line.product_id] -= line.requested
        taken += wants
        checked = ev.InventoryChecked(
            reservations=[
                ev.Reservation(product_id=w.product_id, quantity=w.requested) for w in wants
            ]
        )
        advance(uow, order, checked, actor=ACTOR, cause=d.envelope)
    if taken:
        await inventory.reserve(uow.conn, taken)
        _forget_stock(uow, cache, sorted({line.product_id for line in taken}))


async def release_stock(
    uow: UnitOfWork, deliveries: Sequence[Delivery], *, cache: ProductCache | None = None
) -> None:
    """order.cancelled: put the stock each cancelled order held back on the shelf, once."""
    await inventory.lock_stock_of(uow.conn, sorted({_order_id(d) for d in deliveries}))
    for d in deliveries:
        order = await lock_order(uow, _order_id(d))
        if order.status is not S.CANCELLED:
            continue
        released = await inventory.release(uow.conn, order.id)
        if released:
            _forget_stock(uow, cache, [pid for pid, _ in released])
            event = ev.InventoryReleased(
                reservations=[ev.Reservation(product_id=p, quantity=q) for p, q in released]
            )
            annotate(uow, order, event, actor="compensation", cause=d.envelope)


def _forget_stock(
    uow: UnitOfWork, cache: ProductCache | None, product_ids: list[uuid.UUID]
) -> None:
    """Cached products show stock: drop the changed ones once the change has committed, with
    one round trip."""
    if cache is None or not product_ids:
        return

    async def invalidate() -> None:
        await cache.invalidate(*product_ids)

    uow.after_commit(invalidate)


def _order_id(d: Delivery) -> uuid.UUID:
    assert d.envelope.order_id is not None
    return d.envelope.order_id


def handlers(cache: ProductCache | None = None) -> list[Handler]:
    """The inventory steps; ``cache``, the product cache they keep in step with stock."""
    return [
        TransactionStep(
            saga.INVENTORY_RESERVE,
            apply=partial(reserve_stock, cache=cache),
            claim=claim_and_lock_orders,
        ),
        TransactionStep(
            saga.COMPENSATION_RELEASE,
            apply=partial(release_stock, cache=cache),
            claim=claim_and_lock_orders,
        ),
    ]

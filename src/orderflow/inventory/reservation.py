"""Inventory steps of the saga: reserve every line of a paid order, release on cancellation."""

from __future__ import annotations

import dataclasses
import uuid
from functools import partial

from orderflow.catalogue import ProductCache
from orderflow.domain import events as ev
from orderflow.domain.orders import CancelReason
from orderflow.domain.orders import OrderStatus as S
from orderflow.inventory import store as inventory
from orderflow.kernel.handlers import Delivery, HandlerSpec
from orderflow.kernel.uow import UnitOfWork
from orderflow.ordering import advance, annotate, claim_and_lock_orders, lock_order

ACTOR = "inventory"


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


class Stock:
    """The locked stock of a reservation batch's products, and what the batch has taken.

    Each order is checked against what the orders before it in the batch left; the batch's
    reservations are written with its events, by their statement (a ``before_flush``, which
    each ``take`` schedules, hands them to ``write_with_events``), and its products dropped
    from the cache together once it has committed.
    """

    def __init__(
        self, uow: UnitOfWork, lines: list[inventory.Line], cache: ProductCache | None
    ) -> None:
        self.uow = uow
        self.cache = cache
        self.available = {line.product_id: line.available for line in lines}
        self.lines: dict[uuid.UUID, list[inventory.Line]] = {}
        for line in lines:
            self.lines.setdefault(line.order_id, []).append(line)
        self.taken: list[inventory.Line] = []

    def wants(self, order_id: uuid.UUID) -> list[inventory.Line]:
        """The order's lines, each with the stock still available to it."""
        return [
            dataclasses.replace(line, available=self.available[line.product_id])
            for line in self.lines.get(order_id, [])
        ]

    def take(self, lines: list[inventory.Line]) -> None:
        """Reserve these lines (checked against ``wants``), written at the next flush."""
        self.uow.before_flush(self.write)
        for line in lines:
            self.available[line.product_id] -= line.requested
        self.taken += lines

    async def write(self) -> None:
        taken, self.taken = self.taken, []
        if not taken:
            return
        inventory.reserve(self.uow, taken)
        _forget_stock(self.uow, self.cache, sorted({line.product_id for line in taken}))


async def _lock_stock_to_reserve(
    uow: UnitOfWork, order_ids: list[uuid.UUID], *, cache: ProductCache | None = None
) -> Stock:
    """Every product on a batch's (locked) orders, locked in id order, with its stock."""
    return Stock(uow, await inventory.lock_stock_of(uow.conn, order_ids), cache)


async def reserve(d: Delivery, uow: UnitOfWork, stock: object) -> None:
    """order.paid: reserve all lines or none; a shortage cancels the order (then refunded)."""
    assert d.envelope.order_id is not None
    assert isinstance(stock, Stock)  # from _lock_stock_to_reserve
    order = await lock_order(uow, d.envelope.order_id)
    if order.status is not S.PAID:  # cancelled meanwhile, or already handled
        return
    wants = stock.wants(order.id)
    shortages = [
        ev.Shortage(product_id=w.product_id, requested=w.requested, available=w.available)
        for w in wants
        if w.available < w.requested
    ]
    if shortages:
        annotate(
            uow, order, ev.InventoryInsufficient(shortages=shortages), actor=ACTOR, cause=d.envelope
        )
        reason = CancelReason.OUT_OF_STOCK.value
        cancelled = ev.OrderCancelled(reason=reason, previous_status=order.status.value)
        advance(uow, order, cancelled, actor=ACTOR, cause=d.envelope, cancel_reason=reason)
        return
    stock.take(wants)
    checked = ev.InventoryChecked(
        reservations=[ev.Reservation(product_id=w.product_id, quantity=w.requested) for w in wants]
    )
    advance(uow, order, checked, actor=ACTOR, cause=d.envelope)


async def release(
    d: Delivery, uow: UnitOfWork, _: object, *, cache: ProductCache | None = None
) -> None:
    """order.cancelled: put the stock a cancelled order held back on the shelf, once."""
    assert d.envelope.order_id is not None
    order = await lock_order(uow, d.envelope.order_id)
    if order.status is not S.CANCELLED:
        return
    released = await inventory.release(uow.conn, order.id)
    if released:
        _forget_stock(uow, cache, [pid for pid, _ in released])
        event = ev.InventoryReleased(
            reservations=[ev.Reservation(product_id=pid, quantity=qty) for pid, qty in released]
        )
        annotate(uow, order, event, actor="compensation", cause=d.envelope)


async def _lock_stock(uow: UnitOfWork, order_ids: list[uuid.UUID]) -> None:
    """Every product on a batch's (locked) orders, in id order (release reads its own)."""
    await inventory.lock_stock_of(uow.conn, order_ids)


def handlers(cache: ProductCache | None = None) -> list[HandlerSpec]:
    """The inventory handlers; ``cache``, the product cache they keep in step with stock."""
    return [
        HandlerSpec(
            "inventory.reserve",
            (ev.OrderPaid.TYPE,),
            reserve,
            batch=True,
            claim=claim_and_lock_orders,
            lock_batch=partial(_lock_stock_to_reserve, cache=cache),
        ),
        HandlerSpec(
            "compensation.release",
            (ev.OrderCancelled.TYPE,),
            partial(release, cache=cache),
            batch=True,
            claim=claim_and_lock_orders,
            lock_batch=_lock_stock,
        ),
    ]

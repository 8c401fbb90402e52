"""Preparation, shipping and delivery: done by people (API) or by the autopilot (handlers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from orderflow.adapters.postgres.uow import UnitOfWork
from orderflow.domain import events as ev
from orderflow.domain.model import Order
from orderflow.domain.orders import OrderStatus as S
from orderflow.service.registry import Defer, Delivery, HandlerSpec
from orderflow.service.transitions import act_on_order, advance, lock_order

AUTOPILOT = "autopilot"
AUTOPILOT_CARRIER = "SimCarrier"


def tracking_number() -> str:
    """A carrier tracking number."""
    return f"TRK{uuid.uuid4().hex[:12].upper()}"


async def _act(pool: asyncpg.Pool, order_id: uuid.UUID, event: ev.Event, actor: str) -> Order:
    async def step(uow: UnitOfWork, order: Order) -> None:
        advance(uow, order, event, actor=actor)

    return await act_on_order(pool, order_id=order_id, action=step)


async def prepare_order(pool: asyncpg.Pool, *, order_id: uuid.UUID, actor: str) -> Order:
    """The warehouse packed the order (409 unless its stock is reserved)."""
    return await _act(pool, order_id, ev.OrderPrepared(prepared_by=actor), actor)


async def ship_order(
    pool: asyncpg.Pool, *, order_id: uuid.UUID, carrier: str, tracking: str | None, actor: str
) -> Order:
    """A carrier took the parcel (409 unless prepared)."""
    shipped = ev.OrderShipped(carrier=carrier, tracking_number=tracking or tracking_number())
    return await _act(pool, order_id, shipped, actor)


async def deliver_order(
    pool: asyncpg.Pool, *, order_id: uuid.UUID, carrier: str, actor: str
) -> Order:
    """The carrier confirmed delivery (409 unless shipped)."""
    return await _act(pool, order_id, ev.OrderDelivered(carrier=carrier), actor)


def autopilot_handlers(*, delay_s: float) -> list[HandlerSpec]:
    """Warehouse and carrier simulators: each step follows the previous one after ``delay_s``.

    Waiting goes through the broker (``Defer``), never by sleeping in a handler.
    """

    def wait_if_early(d: Delivery) -> None:
        remaining = delay_s - (datetime.now(UTC) - d.envelope.occurred_at).total_seconds()
        if remaining > 0:
            raise Defer(remaining)

    async def step(d: Delivery, uow: UnitOfWork, expected: S, event: ev.Event) -> None:
        wait_if_early(d)
        assert d.envelope.order_id is not None
        order = await lock_order(uow, d.envelope.order_id)
        if order.status is expected:  # else a person did it first, or it was cancelled
            advance(uow, order, event, actor=AUTOPILOT, cause=d.envelope)

    async def warehouse(d: Delivery, uow: UnitOfWork, _: object) -> None:
        await step(d, uow, S.RESERVED, ev.OrderPrepared(prepared_by=AUTOPILOT))

    async def carrier(d: Delivery, uow: UnitOfWork, _: object) -> None:
        if d.envelope.type == ev.OrderPrepared.TYPE:
            shipped = ev.OrderShipped(carrier=AUTOPILOT_CARRIER, tracking_number=tracking_number())
            await step(d, uow, S.PREPARED, shipped)
        else:
            await step(d, uow, S.SHIPPED, ev.OrderDelivered(carrier=AUTOPILOT_CARRIER))

    # Batched only without a delay: a delayed step defers each first delivery, and a Defer
    # inside a batch rolls the whole batch back before it is applied one by one.
    batch = delay_s == 0
    return [
        HandlerSpec(
            "autopilot.warehouse",
            (ev.InventoryChecked.TYPE,),
            warehouse,
            batch=batch,
            lock_orders=True,
        ),
        HandlerSpec(
            "autopilot.carrier",
            (ev.OrderPrepared.TYPE, ev.OrderShipped.TYPE),
            carrier,
            batch=batch,
            lock_orders=True,
        ),
    ]

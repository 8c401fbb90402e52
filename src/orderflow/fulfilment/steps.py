"""Preparation, shipping and delivery: done by people (API) or by the autopilot (handlers)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from types import MappingProxyType
from typing import Final

import asyncpg

from orderflow.domain import events as ev
from orderflow.domain import saga
from orderflow.domain.model import Order
from orderflow.domain.orders import OrderStatus as S
from orderflow.kernel.handlers import Defer, Delivery, Handler, TransactionStep
from orderflow.kernel.uow import UnitOfWork
from orderflow.ordering import (
    Step,
    act_on_order,
    advance,
    claim_and_lock_orders,
    lock_order,
    shipping_carrier,
    status_step,
)

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
    pool: asyncpg.Pool, *, order_id: uuid.UUID, carrier: str | None, actor: str
) -> Order:
    """The carrier confirmed delivery (409 unless shipped); ``carrier`` defaults to the one
    the order was shipped with."""

    async def step(uow: UnitOfWork, order: Order) -> None:
        name = carrier or await shipping_carrier(uow.conn, order.id) or "unknown"
        advance(uow, order, ev.OrderDelivered(carrier=name), actor=actor)

    return await act_on_order(pool, order_id=order_id, action=step)


def _prepared(_: Delivery) -> ev.Event:
    return ev.OrderPrepared(prepared_by=AUTOPILOT)


def _shipped(_: Delivery) -> ev.Event:
    return ev.OrderShipped(carrier=AUTOPILOT_CARRIER, tracking_number=tracking_number())


def _delivered(_: Delivery) -> ev.Event:
    return ev.OrderDelivered(carrier=AUTOPILOT_CARRIER)


# What the simulated warehouse and carrier do, by the event they follow.
WAREHOUSE: Final = MappingProxyType({ev.InventoryChecked.TYPE: Step(S.RESERVED, _prepared)})
CARRIER: Final = MappingProxyType(
    {
        ev.OrderPrepared.TYPE: Step(S.PREPARED, _shipped),
        ev.OrderShipped.TYPE: Step(S.SHIPPED, _delivered),
    }
)


async def follow_after_delay(
    uow: UnitOfWork,
    deliveries: Sequence[Delivery],
    *,
    steps: Mapping[str, Step],
    delay_s: float,
) -> None:
    """Take each order one step on once ``delay_s`` has passed since the event it follows;
    before that, defer the delivery (through the broker, never by sleeping here)."""
    for d in deliveries:
        remaining = delay_s - (datetime.now(UTC) - d.envelope.occurred_at).total_seconds()
        if remaining > 0:
            raise Defer(remaining)
        assert d.envelope.order_id is not None
        step = steps[d.envelope.type]
        order = await lock_order(uow, d.envelope.order_id)
        if order.status is step.expected:  # else a person did it first, or it was cancelled
            advance(uow, order, step.event(d), actor=AUTOPILOT, cause=d.envelope)


def autopilot_handlers(*, delay_s: float) -> list[Handler]:
    """The simulated warehouse and carrier: each step follows the previous one after
    ``delay_s``."""
    tables = ((saga.AUTOPILOT_WAREHOUSE, WAREHOUSE), (saga.AUTOPILOT_CARRIER, CARRIER))
    if delay_s == 0:
        # As fast as possible: in batches.
        return [
            TransactionStep(
                sub, apply=status_step(steps, actor=AUTOPILOT), claim=claim_and_lock_orders
            )
            for sub, steps in tables
        ]
    # One delivery at a time: a delayed step defers each first delivery, and a Defer inside
    # a batch would roll the whole batch back before it is applied one by one.
    return [
        TransactionStep(
            sub,
            apply=partial(follow_after_delay, steps=steps, delay_s=delay_s),
            claim=claim_and_lock_orders,
            batched=False,
        )
        for sub, steps in tables
    ]

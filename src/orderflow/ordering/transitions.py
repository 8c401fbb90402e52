"""Moving an order along the state machine and recording why, inside a unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from orderflow.domain.errors import NotFound
from orderflow.domain.events import Envelope, Event
from orderflow.domain.idempotency import IdempotentRequest
from orderflow.domain.model import Order
from orderflow.domain.orders import OrderStatus, next_status
from orderflow.kernel.handlers import ApplyFn, Delivery
from orderflow.kernel.uow import UnitOfWork, unit_of_work
from orderflow.observability.tracing import current_trace_id
from orderflow.ordering import store as orders


async def lock_order(
    uow: UnitOfWork, order_id: uuid.UUID, *, owner: uuid.UUID | None = None
) -> Order:
    """The order, row-locked until the unit of work ends; NotFound if absent or not owned."""
    order = uow.locked.get(order_id)
    if order is None:
        order = await orders.get(uow.conn, order_id, lock=True, with_details=False)
        if order is not None:
            uow.locked[order_id] = order
    if order is None or (owner is not None and order.customer_id != owner):
        raise NotFound(f"order {order_id} does not exist")
    return order


async def claim_and_lock_orders(
    uow: UnitOfWork, handler: str, events: Sequence[tuple[uuid.UUID, uuid.UUID | None]]
) -> set[uuid.UUID]:
    """Claim a batch's (event id, order id) pairs in the inbox and row-lock the orders of the
    events claimed now, in id order, in one statement; ``lock_order`` then finds them without
    a query. Returns the event ids claimed now."""
    claimed, locked = await orders.lock_claimed(uow.conn, handler, events)
    for order in locked:
        uow.locked.setdefault(order.id, order)
    return claimed


def _envelope(order: Order, event: Event, cause: Envelope | None, actor: str) -> Envelope:
    if cause is not None:
        return cause.follow(event, actor=actor)
    return Envelope.wrap(event, order_id=order.id, actor=actor, correlation_id=current_trace_id())


def advance(
    uow: UnitOfWork,
    order: Order,
    event: Event,
    *,
    actor: str,
    cause: Envelope | None = None,
    cancel_reason: str | None = None,
) -> OrderStatus:
    """Apply ``event`` to a locked order: new status, timeline entry, outbox row (all written
    by the unit of work's ``flush``, with its other changes).

    Raises ``IllegalTransition`` when the state machine has no such edge.
    """
    status = next_status(order.status, event.TYPE)
    uow.change_status(order, status, cancel_reason=cancel_reason)
    uow.emit(_envelope(order, event, cause, actor), status_after=status)
    return status


def annotate(
    uow: UnitOfWork, order: Order, event: Event, *, actor: str, cause: Envelope | None = None
) -> None:
    """Record ``event`` on the order's timeline and the outbox without changing its status."""
    uow.emit(_envelope(order, event, cause, actor), status_after=order.status)


def emit_off_timeline(
    uow: UnitOfWork, order: Order, event: Event, *, actor: str, cause: Envelope | None = None
) -> None:
    """Send ``event`` through the outbox only (it does not belong on the order's timeline)."""
    uow.emit(_envelope(order, event, cause, actor))


async def act_on_order(
    pool: asyncpg.Pool,
    *,
    order_id: uuid.UUID,
    action: Callable[[UnitOfWork, Order], Awaitable[object]],
    owner: uuid.UUID | None = None,
    idempotency: IdempotentRequest | None = None,
) -> Order:
    """Lock an order, run ``action`` on it and return the order as the transaction leaves it.

    The one path for every request that moves an order (pay, cancel, prepare, ship, deliver);
    with ``idempotency`` the answer is recorded in the same transaction.
    """
    async with unit_of_work(pool, idempotency=idempotency) as uow:
        order = await lock_order(uow, order_id, owner=owner)
        await action(uow, order)
        await uow.flush()
        result = await orders.get(uow.conn, order_id)
        assert result is not None
        uow.complete(result)
    return result


@dataclass(frozen=True, slots=True)
class Step:
    """A status-only saga step: an order in ``expected`` takes the event ``event`` makes
    of the delivery; an order in any other status is left as it is (a person did it first,
    or it was cancelled)."""

    expected: OrderStatus
    event: Callable[[Delivery], Event]


def status_step(steps: Mapping[str, Step], *, actor: str) -> ApplyFn:
    """A step that only moves orders on (``steps`` by the event type they follow): each order
    still in the status its step expects takes the step's event; an order in any other
    status is left as it is (a person did it first, or it was cancelled). Its orders are
    locked by the claim (``claim_and_lock_orders``)."""

    async def move_orders(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            assert d.envelope.order_id is not None
            step = steps[d.envelope.type]
            order = await lock_order(uow, d.envelope.order_id)
            if order.status is step.expected:
                advance(uow, order, step.event(d), actor=actor, cause=d.envelope)

    return move_orders

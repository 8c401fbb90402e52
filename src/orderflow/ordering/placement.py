"""Placing an order: check its lines, price them (cache, then PostgreSQL) and store it with
its ``order.created`` event, alone, in a placement batch, or under an idempotency key."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from orderflow.catalogue import ProductCache, products_by_id
from orderflow.domain import events as ev
from orderflow.domain.errors import (
    Conflict,
    CurrencyMismatch,
    DuplicateProducts,
    InvalidRequest,
    UnknownProducts,
)
from orderflow.domain.idempotency import IdempotentRequest
from orderflow.domain.model import Order, Product, TimelineEntry
from orderflow.domain.orders import OrderStatus, initial_status
from orderflow.domain.pricing import PricedLine, PricingStrategy
from orderflow.kernel.outbox import wake_relays
from orderflow.kernel.uow import unit_of_work
from orderflow.observability.tracing import current_trace_id
from orderflow.ordering import order_insert as orders
from orderflow.ordering.placement_batches import Insert, PlacementBatcher, insert_alone


@dataclass(frozen=True, slots=True)
class LineRequest:
    product_id: uuid.UUID
    quantity: int


def _check_lines(lines: Sequence[LineRequest]) -> None:
    if not lines:
        raise InvalidRequest("an order needs at least one line")
    counts = Counter(line.product_id for line in lines)
    duplicated = sorted(str(pid) for pid, n in counts.items() if n > 1)
    if duplicated:
        raise DuplicateProducts(
            f"each product may appear on one line only; repeated: {', '.join(duplicated)}",
            product_ids=duplicated,
        )


# Pricing again after a product changed under the order; more than a few means the catalogue
# is being rewritten as fast as orders come in, and the caller may try again later.
_PRICING_ATTEMPTS = 3


async def place_order(
    pool: asyncpg.Pool,
    *,
    customer_id: uuid.UUID,
    lines: Sequence[LineRequest],
    payment_token: str | None,
    pricing: PricingStrategy,
    actor: str = "customer",
    idempotency: IdempotentRequest | None = None,
    cache: ProductCache | None = None,
    batcher: PlacementBatcher | None = None,
) -> Order:
    """Price and store an order with its ``order.created`` event, atomically.

    Products are priced from the cache when it has them; the statement that stores the order
    checks each product's version and writes nothing if one changed, so a stale cache costs
    a second pricing from PostgreSQL, never a wrong price. Without an idempotency key that
    statement is the whole write (atomic on its own), shared with other orders when a
    ``batcher`` is given; with one, it runs in the transaction that claims the key and records
    the answer.
    """
    _check_lines(lines)
    request = _Placement(customer_id, lines, payment_token, pricing, actor)
    cached = await cache.get_many(request.product_ids) if cache is not None else {}
    if idempotency is not None:
        async with unit_of_work(pool, idempotency=idempotency) as uow:
            order = await _store(uow.conn, request, cached, cache, insert_alone(uow.conn))
            uow.complete(order)
    elif batcher is not None:
        order = await _store(pool, request, cached, cache, batcher.insert)
    else:
        async with pool.acquire() as conn:
            order = await _store(conn, request, cached, cache, insert_alone(conn))
    wake_relays(pool)
    return order


@dataclass(frozen=True, slots=True)
class _Placement:
    customer_id: uuid.UUID
    lines: Sequence[LineRequest]
    payment_token: str | None
    pricing: PricingStrategy
    actor: str

    @property
    def product_ids(self) -> list[uuid.UUID]:
        return [line.product_id for line in self.lines]


async def _store(
    db: asyncpg.Connection | asyncpg.Pool,
    request: _Placement,
    catalogue: dict[uuid.UUID, Product],
    cache: ProductCache | None,
    insert: Insert,
) -> Order:
    """Price the order (from ``catalogue``, then from ``db``) and ``insert`` it, pricing it
    again from PostgreSQL while its products keep changing under it."""
    ids = request.product_ids
    for _ in range(_PRICING_ATTEMPTS):
        if missing := [pid for pid in ids if pid not in catalogue]:
            fresh = await products_by_id(db, missing)
            catalogue = {**catalogue, **fresh}
            if cache is not None and fresh:
                await cache.put_many(fresh.values())
        new, envelope = _draft(request, catalogue)
        stored = await insert(new)
        if stored is not None:
            return _with_timeline(stored, envelope, new.status)
        # A product changed since it was priced: forget what we knew and price it again.
        if cache is not None:
            await cache.invalidate(*ids)
        catalogue = {}
    raise Conflict("the products of this order kept changing while it was placed; try again")


def _draft(
    request: _Placement, catalogue: dict[uuid.UUID, Product]
) -> tuple[orders.NewOrder, ev.Envelope]:
    """The order priced from ``catalogue``, and its ``order.created`` event."""
    lines, payment_token = request.lines, request.payment_token
    missing = [str(line.product_id) for line in lines if line.product_id not in catalogue]
    if missing:
        raise UnknownProducts(f"unknown products: {', '.join(missing)}", product_ids=missing)
    currencies = {catalogue[line.product_id].currency for line in lines}
    if len(currencies) > 1:
        raise CurrencyMismatch(f"products are priced in several currencies: {currencies}")
    currency = currencies.pop()
    new_lines = [
        orders.NewLine(
            product_id=p.id,
            sku=p.sku,
            name=p.name,
            unit_price=p.price,
            quantity=line.quantity,
            product_version=p.version,
        )
        for line in lines
        for p in (catalogue[line.product_id],)
    ]
    quote = request.pricing.quote([PricedLine(nl.unit_price, nl.quantity) for nl in new_lines])
    status = initial_status(has_payment_method=payment_token is not None)
    order_id = uuid.uuid4()
    placed = ev.OrderPlaced(
        customer_id=request.customer_id,
        lines=[
            ev.Line(
                product_id=nl.product_id, sku=nl.sku, quantity=nl.quantity, unit_price=nl.unit_price
            )
            for nl in new_lines
        ],
        subtotal=quote.subtotal,
        discount=quote.discount,
        tax=quote.tax,
        total=quote.total,
        currency=currency,
        has_payment_method=payment_token is not None,
    )
    envelope = ev.Envelope.wrap(
        placed, order_id=order_id, actor=request.actor, correlation_id=current_trace_id()
    )
    new = orders.NewOrder(
        id=order_id,
        customer_id=request.customer_id,
        status=status,
        currency=currency,
        quote=quote,
        pricing=request.pricing.name,
        payment_token=payment_token,
        lines=new_lines,
        events=[(envelope, status)],
    )
    return new, envelope


def _with_timeline(order: Order, envelope: ev.Envelope, status: OrderStatus) -> Order:
    entry = TimelineEntry(
        event=envelope.type,
        at=envelope.occurred_at,
        actor=envelope.actor,
        status=status,
        event_id=envelope.event_id,
        data=envelope.payload,
    )
    return Order(
        **{f: getattr(order, f) for f in order.__slots__ if f != "timeline"}, timeline=[entry]
    )

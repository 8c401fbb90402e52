"""Order use cases of the API: place, read, list, cancel."""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from orderflow.catalogue import ProductCache, products_by_id
from orderflow.domain import events as ev
from orderflow.domain.bounds import utc_instant
from orderflow.domain.errors import (
    Conflict,
    CurrencyMismatch,
    DuplicateProducts,
    InvalidRequest,
    NotFound,
    UnknownProducts,
)
from orderflow.domain.idempotency import IdempotentRequest
from orderflow.domain.model import Order, Page, Product, TimelineEntry
from orderflow.domain.orders import OrderStatus, initial_status
from orderflow.domain.pricing import PricedLine, PricingStrategy
from orderflow.kernel.batching import Coalescer
from orderflow.kernel.outbox import wake_relays
from orderflow.kernel.uow import UnitOfWork, unit_of_work
from orderflow.observability.metrics import PLACEMENT_BATCH_SIZE
from orderflow.ordering import store as orders
from orderflow.ordering.transitions import act_on_order, advance

log = structlog.get_logger(__name__)


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

# Stores one priced order: the order as stored, or None if a product changed since it was
# priced (nothing was written).
_Insert = Callable[[orders.NewOrder], Awaitable[Order | None]]


class PlacementBatcher:
    """Stores the orders placed concurrently in one process with one statement (ADR 0010).

    Natural batching (``kernel.batching``): an order placed while the previous batch is being
    written waits for it and joins the next one, so a busy API process shares one round trip
    and one commit among many orders, and an idle one writes each order at once. Each order is
    still written with its lines and events or not at all. Orders without an idempotency key
    are batched (a second pricing after a product changed joins a later batch too); if a
    batch fails on a constraint (a customer or product deleted meanwhile), its orders are
    written one by one so that each gets its own answer.
    """

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int) -> None:
        self.pool = pool
        self._coalescer: Coalescer[orders.NewOrder, Order | _Alone | None] = Coalescer(
            self._insert_batch, max_batch=max_batch
        )

    @property
    def busy(self) -> bool:
        """Whether a batch is being stored."""
        return self._coalescer.busy

    @property
    def waiting(self) -> int:
        """Orders waiting for the next batch (the one in flight not counted)."""
        return self._coalescer.waiting

    async def insert(self, new: orders.NewOrder) -> Order | None:
        """Store ``new`` in the next batch (see ``_Insert``)."""
        outcome = await self._coalescer.submit(new)
        if isinstance(outcome, _Alone):
            async with self.pool.acquire() as conn:
                return await _insert_on(conn)(new)
        return outcome

    async def _insert_batch(self, batch: list[orders.NewOrder]) -> list[Order | _Alone | None]:
        async with self.pool.acquire() as conn:
            try:
                stored = await orders.insert_many(conn, batch)
            except asyncpg.IntegrityConstraintViolationError:
                if len(batch) == 1:
                    return [_ALONE]
                log.info("placement_batch_split", size=len(batch))
                return [_ALONE] * len(batch)
        PLACEMENT_BATCH_SIZE.observe(len(batch))
        return [stored.get(new.id) for new in batch]


class _Alone:
    """A batch outcome: store this order on its own."""


_ALONE = _Alone()


def _insert_on(conn: asyncpg.Connection) -> _Insert:
    """Store an order alone on ``conn``, with the constraint errors a caller can act on."""

    async def insert(new: orders.NewOrder) -> Order | None:
        try:
            return (await orders.insert_many(conn, [new])).get(new.id)
        except asyncpg.ForeignKeyViolationError as exc:
            if "customer" in (exc.constraint_name or ""):
                raise InvalidRequest(f"customer {new.customer_id} does not exist") from None
            raise UnknownProducts("a product of this order was just deleted") from None

    return insert


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
            order = await _store(uow.conn, request, cached, cache, _insert_on(uow.conn))
            uow.complete(order)
    elif batcher is not None:
        order = await _store(pool, request, cached, cache, batcher.insert)
    else:
        async with pool.acquire() as conn:
            order = await _store(conn, request, cached, cache, _insert_on(conn))
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
    insert: _Insert,
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
    envelope = ev.Envelope.wrap(placed, order_id=order_id, actor=request.actor)
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


async def get_order(
    pool: asyncpg.Pool, *, order_id: uuid.UUID, owner: uuid.UUID | None = None
) -> Order:
    """One order with lines and timeline; ``owner`` hides other customers' orders."""
    async with pool.acquire() as conn:
        found = await orders.get(conn, order_id)
    if found is None or (owner is not None and found.customer_id != owner):
        raise NotFound(f"order {order_id} does not exist")
    return found


async def order_timeline(
    pool: asyncpg.Pool,
    *,
    order_id: uuid.UUID,
    after: int,
    limit: int,
    owner: uuid.UUID | None = None,
) -> Page[TimelineEntry]:
    """A page of an order's timeline, oldest first."""
    async with pool.acquire() as conn:
        found = await orders.get(conn, order_id, with_details=False)
        if found is None or (owner is not None and found.customer_id != owner):
            raise NotFound(f"order {order_id} does not exist")
        page = await orders.timeline_page(conn, order_id, after=after, limit=limit)
    cursor = str(page[-1][0]) if len(page) == limit else None
    return Page(items=[entry for _, entry in page], next_cursor=cursor)


def encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    """An opaque keyset cursor for order listings."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{order_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Undo ``encode_cursor``; raises InvalidRequest on garbage."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
        at, _, oid = raw.partition("|")
        return utc_instant(datetime.fromisoformat(at)), uuid.UUID(oid)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the cursor is not one this API issued") from None


async def list_orders(
    pool: asyncpg.Pool,
    *,
    customer_id: uuid.UUID | None = None,
    status: OrderStatus | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Order]:
    """Orders newest first, filtered, keyset-paged."""
    before = decode_cursor(cursor) if cursor else None
    async with pool.acquire() as conn:
        found = await orders.search(
            conn,
            customer_id=customer_id,
            status=status,
            created_from=created_from,
            created_to=created_to,
            before=before,
            limit=limit,
        )
    next_cursor = encode_cursor(found[-1].created_at, found[-1].id) if len(found) == limit else None
    return Page(items=found, next_cursor=next_cursor)


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

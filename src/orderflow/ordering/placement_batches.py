"""Placement batches: the orders placed concurrently in one process, stored with one statement."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from orderflow.domain.errors import InvalidRequest, UnknownProducts
from orderflow.domain.model import Order
from orderflow.kernel.batching import Coalescer
from orderflow.observability.metrics import PLACEMENT_BATCH_SIZE
from orderflow.ordering import order_insert as orders

log = structlog.get_logger(__name__)

# Stores one priced order: the order as stored, or None if a product changed since it was
# priced (nothing was written).
Insert = Callable[[orders.NewOrder], Awaitable[Order | None]]


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
        """Store ``new`` in the next batch (see ``Insert``)."""
        outcome = await self._coalescer.submit(new)
        if isinstance(outcome, _Alone):
            async with self.pool.acquire() as conn:
                return await insert_alone(conn)(new)
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


def insert_alone(conn: asyncpg.Connection) -> Insert:
    """Store an order alone on ``conn``, with the constraint errors a caller can act on."""

    async def insert(new: orders.NewOrder) -> Order | None:
        try:
            return (await orders.insert_many(conn, [new])).get(new.id)
        except asyncpg.ForeignKeyViolationError as exc:
            if "customer" in (exc.constraint_name or ""):
                raise InvalidRequest(f"customer {new.customer_id} does not exist") from None
            raise UnknownProducts("a product of this order was just deleted") from None

    return insert

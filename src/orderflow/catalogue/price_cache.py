"""An in-process layer in front of the shared product cache, for pricing orders only.

Order placement confirms every product's version in the statement that stores the order, so
a price read from here that has gone stale costs a second pricing, never a wrong charge. That
is what makes a per-process copy safe for placement, and only for placement: product reads
must see a change at once, so they keep going to the shared cache.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from orderflow.catalogue.products import ProductCache
from orderflow.domain.model import Product
from orderflow.observability.metrics import PRODUCT_CACHE


class PriceCache:
    """``ProductCache`` that answers from memory for ``ttl_s`` before asking ``shared``."""

    def __init__(
        self,
        shared: ProductCache,
        *,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[uuid.UUID, tuple[float, Product]] = {}

    def _fresh(self, product_id: uuid.UUID, now: float) -> Product | None:
        entry = self._entries.get(product_id)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[product_id]
            return None
        return entry[1]

    def _keep(self, products: Iterable[Product]) -> None:
        expires = self._clock() + self.ttl_s
        for product in products:
            self._entries.pop(product.id, None)  # re-inserted last: the oldest go first
            self._entries[product.id] = (expires, product)
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]

    async def get(self, product_id: uuid.UUID) -> Product | None:
        """One product: from memory, else from the shared cache."""
        return (await self.get_many([product_id])).get(product_id)

    async def get_many(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        """The products known here or to the shared cache (missing ones are left out)."""
        now = self._clock()
        found: dict[uuid.UUID, Product] = {}
        missing: list[uuid.UUID] = []
        for product_id in product_ids:
            product = self._fresh(product_id, now)
            if product is None:
                missing.append(product_id)
            else:
                found[product_id] = product
        if found:
            PRODUCT_CACHE.labels("local").inc(len(found))
        if missing:
            shared = await self.shared.get_many(missing)
            self._keep(shared.values())
            found.update(shared)
        return found

    async def put(self, product: Product) -> None:
        """Remember a product read from PostgreSQL, here and in the shared cache."""
        await self.put_many([product])

    async def put_many(self, products: Iterable[Product]) -> None:
        """Remember products read from PostgreSQL, here and in the shared cache."""
        products = list(products)
        self._keep(products)
        await self.shared.put_many(products)

    async def invalidate(self, *product_ids: uuid.UUID) -> None:
        """Forget products here and in the shared cache."""
        for product_id in product_ids:
            self._entries.pop(product_id, None)
        await self.shared.invalidate(*product_ids)

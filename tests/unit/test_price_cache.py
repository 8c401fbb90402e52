"""The API process's own copy of products for pricing orders (adapters/price_cache.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from orderflow.adapters.price_cache import PriceCache
from orderflow.domain.model import Product


class SharedCache:
    """Our ProductCache port in memory: counts what reaches it."""

    def __init__(self) -> None:
        self.products: dict[uuid.UUID, Product] = {}
        self.asked: list[uuid.UUID] = []

    async def get(self, product_id: uuid.UUID) -> Product | None:
        return (await self.get_many([product_id])).get(product_id)

    async def get_many(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        self.asked.extend(product_ids)
        return {p: self.products[p] for p in product_ids if p in self.products}

    async def put(self, product: Product) -> None:
        await self.put_many([product])

    async def put_many(self, products: Iterable[Product]) -> None:
        self.products.update({p.id: p for p in products})

    async def invalidate(self, *product_ids: uuid.UUID) -> None:
        for product_id in product_ids:
            self.products.pop(product_id, None)


def _product(price: int = 100) -> Product:
    now = datetime.now(UTC)
    return Product(
        id=uuid.uuid4(),
        sku="S",
        name="n",
        description="",
        price=price,
        currency="EUR",
        stock=1,
        version=1,
        created_at=now,
        updated_at=now,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_answers_from_memory_until_the_ttl_then_asks_the_shared_cache() -> None:
    shared, clock = SharedCache(), Clock()
    cache = PriceCache(shared, ttl_s=5, clock=clock)
    product = _product()
    await cache.put_many([product])
    assert shared.products == {product.id: product}  # written through
    assert await cache.get_many([product.id]) == {product.id: product}
    assert shared.asked == []
    clock.now = 5.0
    assert await cache.get(product.id) == product
    assert shared.asked == [product.id]


async def test_invalidate_forgets_here_and_in_the_shared_cache() -> None:
    shared = SharedCache()
    cache = PriceCache(shared, ttl_s=60)
    product = _product()
    await cache.put(product)
    await cache.invalidate(product.id)
    assert await cache.get(product.id) is None
    assert shared.asked == [product.id]


async def test_keeps_at_most_max_entries_dropping_the_oldest() -> None:
    shared = SharedCache()
    cache = PriceCache(shared, ttl_s=60, max_entries=2)
    first, second, third = _product(), _product(), _product()
    await cache.put_many([first, second, third])
    await cache.get_many([first.id, second.id, third.id])
    assert shared.asked == [first.id]

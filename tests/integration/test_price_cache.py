"""The API process's own copy of products for pricing orders (catalogue/price_cache.py), in
front of the real Redis product cache."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from orderflow.catalogue.price_cache import PriceCache
from orderflow.catalogue.redis_cache import RedisProductCache
from orderflow.domain.model import Product


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


async def test_answers_from_memory_until_the_ttl_then_asks_the_shared_cache(
    product_cache: RedisProductCache,
) -> None:
    clock = Clock()
    cache = PriceCache(product_cache, ttl_s=5, clock=clock)
    product = _product()
    await cache.put_many([product])
    assert await product_cache.get(product.id) == product  # written through
    # Another process changes the product: Redis forgets it, this process's copy does not...
    await product_cache.invalidate(product.id)
    assert await cache.get_many([product.id]) == {product.id: product}
    # ...until its time is up; then it asks Redis, which has nothing.
    clock.now = 5.0
    assert await cache.get(product.id) is None


async def test_invalidate_forgets_here_and_in_the_shared_cache(
    product_cache: RedisProductCache,
) -> None:
    cache = PriceCache(product_cache, ttl_s=60)
    product = _product()
    await cache.put(product)
    await cache.invalidate(product.id)
    assert await cache.get(product.id) is None
    assert await product_cache.get(product.id) is None


async def test_keeps_at_most_max_entries_dropping_the_oldest(
    product_cache: RedisProductCache,
) -> None:
    cache = PriceCache(product_cache, ttl_s=60, max_entries=2)
    first, second, third = _product(), _product(), _product()
    await cache.put_many([first, second, third])
    await product_cache.invalidate(first.id, second.id, third.id)  # only memory has them now
    found = await cache.get_many([first.id, second.id, third.id])
    assert found == {second.id: second, third.id: third}  # the oldest was dropped

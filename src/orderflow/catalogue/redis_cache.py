"""Read-through product cache in Redis, invalidated on every change."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from orderflow.domain.model import Product
from orderflow.kernel.redis import RedisLink
from orderflow.observability.metrics import PRODUCT_CACHE

# Written on invalidation instead of deleting the key. Fills use SET NX, so a reader that
# loaded the old row before the change committed cannot put it back afterwards; it must
# outlive any such reader (whose calls are bounded by the Redis and database timeouts).
_TOMBSTONE = b"-"
_TOMBSTONE_TTL_S = 30


def _encode(product: Product) -> bytes:
    # default=str: asyncpg hands out its own UUID type, which orjson does not know.
    return orjson.dumps(product, default=str)


def _decode(raw: bytes | str) -> Product:
    data: dict[str, Any] = orjson.loads(raw)
    data["id"] = uuid.UUID(data["id"])
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    data["updated_at"] = datetime.fromisoformat(data["updated_at"])
    return Product(**data)


class RedisProductCache:
    """Implements the catalogue's ProductCache port; every failure is a miss."""

    def __init__(self, link: RedisLink, *, ttl_s: int) -> None:
        self._link = link
        self._ttl = ttl_s

    def _key(self, product_id: uuid.UUID) -> str:
        return self._link.key("product", str(product_id))

    async def get(self, product_id: uuid.UUID) -> Product | None:
        """The cached product, or None (miss, invalidated, or Redis unavailable)."""
        if not self._link.available:
            PRODUCT_CACHE.labels("error").inc()
            return None
        try:
            raw = await self._link.client.get(self._key(product_id))
        except Exception as exc:  # a cache failure is a miss
            self._link.failed("product_cache_get", exc)
            PRODUCT_CACHE.labels("error").inc()
            return None
        if raw is None or raw == _TOMBSTONE:
            PRODUCT_CACHE.labels("miss").inc()
            return None
        PRODUCT_CACHE.labels("hit").inc()
        return _decode(raw)

    async def get_many(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        """The cached ones among ``product_ids``, in one round trip (MGET)."""
        if not product_ids:
            return {}
        if not self._link.available:
            PRODUCT_CACHE.labels("error").inc(len(product_ids))
            return {}
        try:
            raws = await self._link.client.mget([self._key(pid) for pid in product_ids])
        except Exception as exc:  # a cache failure is a miss
            self._link.failed("product_cache_get", exc)
            PRODUCT_CACHE.labels("error").inc(len(product_ids))
            return {}
        found = {
            pid: _decode(raw)
            for pid, raw in zip(product_ids, raws, strict=True)
            if raw is not None and raw != _TOMBSTONE
        }
        PRODUCT_CACHE.labels("hit").inc(len(found))
        PRODUCT_CACHE.labels("miss").inc(len(product_ids) - len(found))
        return found

    async def put_many(self, products: Iterable[Product]) -> None:
        """Fill the cache after misses, in one round trip (a pipeline of ``put``)."""
        if not self._link.available:
            return
        try:
            async with self._link.client.pipeline(transaction=False) as pipe:
                for product in products:
                    pipe.set(self._key(product.id), _encode(product), ex=self._ttl, nx=True)
                await pipe.execute()
        except Exception as exc:
            self._link.failed("product_cache_put", exc)

    async def put(self, product: Product) -> None:
        """Fill the cache after a miss, unless the product changed meanwhile."""
        if not self._link.available:
            return
        value = _encode(product)
        try:
            await self._link.client.set(self._key(product.id), value, ex=self._ttl, nx=True)
        except Exception as exc:
            self._link.failed("product_cache_put", exc)

    async def invalidate(self, *product_ids: uuid.UUID) -> None:
        """Forget products after a change has committed (one round trip for them all)."""
        if not product_ids:
            return
        try:
            async with self._link.client.pipeline(transaction=False) as pipe:
                for product_id in product_ids:
                    pipe.set(self._key(product_id), _TOMBSTONE, ex=_TOMBSTONE_TTL_S)
                await pipe.execute()
        except Exception as exc:
            # Bounded staleness: the TTL is the backstop. Prices charged are never stale,
            # orders read them from PostgreSQL inside their own transaction.
            self._link.failed("product_cache_invalidate", exc)

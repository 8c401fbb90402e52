"""Catalogue use cases: products and their stock."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import asyncpg

from orderflow.catalogue import store as products
from orderflow.domain.errors import Conflict, NotFound
from orderflow.domain.model import Page, Product


class ProductCache(Protocol):
    """A read-through cache of products by id; it may forget anything at any time."""

    async def get(self, product_id: uuid.UUID) -> Product | None: ...

    async def get_many(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]: ...

    async def put(self, product: Product) -> None: ...

    async def put_many(self, products: Iterable[Product]) -> None: ...

    async def invalidate(self, *product_ids: uuid.UUID) -> None: ...


async def create_product(
    pool: asyncpg.Pool,
    *,
    sku: str,
    name: str,
    price: int,
    stock: int,
    currency: str,
    description: str = "",
) -> Product:
    """Add a product to the catalogue."""
    async with pool.acquire() as conn, conn.transaction():
        try:
            return await products.insert(
                conn,
                product_id=uuid.uuid4(),
                sku=sku,
                name=name,
                description=description,
                price=price,
                currency=currency,
                stock=stock,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a product with SKU {sku!r} already exists", sku=sku) from None


async def get_product(
    pool: asyncpg.Pool, *, product_id: uuid.UUID, cache: ProductCache | None = None
) -> Product:
    """One product by id, from the cache when it has it."""
    if cache is not None and (cached := await cache.get(product_id)) is not None:
        return cached
    async with pool.acquire() as conn:
        found = await products.get(conn, product_id)
    if found is None:
        raise NotFound(f"product {product_id} does not exist")
    if cache is not None:
        await cache.put(found)
    return found


async def update_product(
    pool: asyncpg.Pool,
    *,
    product_id: uuid.UUID,
    changes: dict[str, Any],
    cache: ProductCache | None = None,
) -> Product:
    """Change some fields of a product; stock changes are recorded as movements."""
    if not changes:
        return await get_product(pool, product_id=product_id)
    async with pool.acquire() as conn, conn.transaction():
        try:
            updated = await products.update(conn, product_id, changes)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a product with SKU {changes.get('sku')!r} already exists") from None
    if cache is not None:
        await cache.invalidate(product_id)
    if updated is None:
        raise NotFound(f"product {product_id} does not exist")
    return updated


async def delete_product(
    pool: asyncpg.Pool, *, product_id: uuid.UUID, cache: ProductCache | None = None
) -> None:
    """Remove a product that no order references."""
    async with pool.acquire() as conn, conn.transaction():
        try:
            deleted = await products.delete(conn, product_id)
        except asyncpg.ForeignKeyViolationError:
            raise Conflict(
                f"product {product_id} is referenced by orders and cannot be deleted",
                product_id=str(product_id),
            ) from None
    if cache is not None:
        await cache.invalidate(product_id)
    if not deleted:
        raise NotFound(f"product {product_id} does not exist")


async def list_products(
    pool: asyncpg.Pool,
    *,
    min_price: int | None = None,
    max_price: int | None = None,
    in_stock: bool | None = None,
    text: str | None = None,
    sort: str = "name",
    descending: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> Page[Product]:
    """A filtered, sorted page of the catalogue."""
    async with pool.acquire() as conn:
        items, total = await products.search(
            conn,
            min_price=min_price,
            max_price=max_price,
            in_stock=in_stock,
            text=text,
            sort=sort,
            descending=descending,
            limit=limit,
            offset=offset,
        )
    more = offset + len(items) < total
    return Page(items=items, next_cursor=str(offset + len(items)) if more else None, total=total)

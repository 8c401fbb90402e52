"""Catalogue use cases: products and their stock."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from orderflow.adapters.postgres import products
from orderflow.domain.errors import Conflict, NotFound
from orderflow.domain.model import Page, Product


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


async def get_product(pool: asyncpg.Pool, *, product_id: uuid.UUID) -> Product:
    """One product by id."""
    async with pool.acquire() as conn:
        found = await products.get(conn, product_id)
    if found is None:
        raise NotFound(f"product {product_id} does not exist")
    return found


async def update_product(
    pool: asyncpg.Pool, *, product_id: uuid.UUID, changes: dict[str, Any]
) -> Product:
    """Change some fields of a product; stock changes are recorded as movements."""
    if not changes:
        return await get_product(pool, product_id=product_id)
    async with pool.acquire() as conn, conn.transaction():
        try:
            updated = await products.update(conn, product_id, changes)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a product with SKU {changes.get('sku')!r} already exists") from None
    if updated is None:
        raise NotFound(f"product {product_id} does not exist")
    return updated


async def delete_product(pool: asyncpg.Pool, *, product_id: uuid.UUID) -> None:
    """Remove a product that no order references."""
    async with pool.acquire() as conn, conn.transaction():
        try:
            deleted = await products.delete(conn, product_id)
        except asyncpg.ForeignKeyViolationError:
            raise Conflict(
                f"product {product_id} is referenced by orders and cannot be deleted",
                product_id=str(product_id),
            ) from None
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

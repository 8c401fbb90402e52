"""Product and stock queries."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from orderflow.domain.model import Product

_SORTS = {
    "name": "name {dir}, id {dir}",
    "price": "price {dir}, id {dir}",
    "created_at": "created_at {dir}, id {dir}",
    "stock": "stock {dir}, id {dir}",
}

PRODUCT_COLUMNS = (
    "id, sku, name, description, price, currency, stock, version, created_at, updated_at"
)


def _product(row: Mapping[str, Any]) -> Product:
    return Product(**dict(row))


async def insert(
    conn: asyncpg.Connection,
    *,
    product_id: uuid.UUID,
    sku: str,
    name: str,
    description: str,
    price: int,
    currency: str,
    stock: int,
) -> Product:
    """Insert a product and its initial stock movement."""
    row = await conn.fetchrow(
        f"""
        WITH p AS (
            INSERT INTO products (id, sku, name, description, price, currency, stock)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            RETURNING {PRODUCT_COLUMNS}
        ), m AS (
            INSERT INTO stock_movements (product_id, kind, quantity)
            SELECT id, 'initial', stock FROM p WHERE stock > 0
        )
        SELECT * FROM p
        """,
        product_id,
        sku,
        name,
        description,
        price,
        currency,
        stock,
    )
    return _product(row)


async def get(conn: asyncpg.Connection, product_id: uuid.UUID) -> Product | None:
    row = await conn.fetchrow(f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1", product_id)
    return _product(row) if row else None


async def get_many(
    conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Product]:
    records = await conn.fetch(
        f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ANY($1::uuid[])", list(ids)
    )
    return {r["id"]: _product(r) for r in records}


async def update(
    conn: asyncpg.Connection, product_id: uuid.UUID, changes: dict[str, Any]
) -> Product | None:
    """Apply ``changes``; a stock change is recorded as an 'adjust' movement."""
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
    row = await conn.fetchrow(
        f"""
        WITH old AS (SELECT stock FROM products WHERE id = $1 FOR NO KEY UPDATE),
        p AS (
            UPDATE products SET {assignments}, version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {PRODUCT_COLUMNS}
        ), m AS (
            INSERT INTO stock_movements (product_id, kind, quantity)
            SELECT p.id, 'adjust', p.stock - old.stock FROM p, old WHERE p.stock <> old.stock
        )
        SELECT * FROM p
        """,
        product_id,
        *changes.values(),
    )
    return _product(row) if row else None


async def delete(conn: asyncpg.Connection, product_id: uuid.UUID) -> bool:
    """Delete a product; raises ForeignKeyViolationError while order lines reference it."""
    status = await conn.execute("DELETE FROM products WHERE id = $1", product_id)
    return bool(status != "DELETE 0")


async def search(
    conn: asyncpg.Connection,
    *,
    min_price: int | None,
    max_price: int | None,
    in_stock: bool | None,
    text: str | None,
    sort: str,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[list[Product], int]:
    """Filter, sort and page the catalogue; returns the page and the total match count."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if min_price is not None:
        clauses.append(f"price >= {arg(min_price)}")
    if max_price is not None:
        clauses.append(f"price <= {arg(max_price)}")
    if in_stock is True:
        clauses.append("stock > 0")
    elif in_stock is False:
        clauses.append("stock = 0")
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = arg(f"%{escaped}%")
        clauses.append(f"(name ILIKE {pattern} OR sku ILIKE {pattern})")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    order = _SORTS[sort].format(dir="DESC" if descending else "ASC")
    records = await conn.fetch(
        f"SELECT {PRODUCT_COLUMNS}, count(*) OVER () AS total FROM products {where} "
        f"ORDER BY {order} LIMIT {arg(limit)} OFFSET {arg(offset)}",
        *args,
    )
    total = records[0]["total"] if records else 0
    if not records and offset:
        total = await conn.fetchval(f"SELECT count(*) FROM products {where}", *args[:-2])
    return [_product({k: v for k, v in r.items() if k != "total"}) for r in records], total

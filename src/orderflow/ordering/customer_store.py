"""Customer queries."""

from __future__ import annotations

import uuid

import asyncpg

from orderflow.domain.model import Customer
from orderflow.ordering import rows

_COLUMNS = "id, email, name, created_at"


async def insert(
    conn: asyncpg.Connection, *, customer_id: uuid.UUID, email: str, name: str
) -> Customer:
    """Insert a customer; raises UniqueViolationError for a taken email."""
    row = await conn.fetchrow(
        f"INSERT INTO customers (id, email, name) VALUES ($1, $2, $3) RETURNING {_COLUMNS}",
        customer_id,
        email,
        name,
    )
    return rows.customer(row)


async def get(conn: asyncpg.Connection, customer_id: uuid.UUID) -> Customer | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM customers WHERE id = $1", customer_id)
    return rows.customer(row) if row else None

"""Customer use cases."""

from __future__ import annotations

import uuid

import asyncpg

from orderflow.domain.errors import Conflict, NotFound
from orderflow.domain.model import Customer
from orderflow.ordering import customer_store as customers


async def create_customer(pool: asyncpg.Pool, *, email: str, name: str) -> Customer:
    """Register a customer; emails are unique regardless of case."""
    async with pool.acquire() as conn:
        try:
            return await customers.insert(conn, customer_id=uuid.uuid4(), email=email, name=name)
        except asyncpg.UniqueViolationError:
            raise Conflict("a customer with this email already exists") from None


async def get_customer(pool: asyncpg.Pool, *, customer_id: uuid.UUID) -> Customer:
    """One customer by id."""
    async with pool.acquire() as conn:
        found = await customers.get(conn, customer_id)
    if found is None:
        raise NotFound(f"customer {customer_id} does not exist")
    return found

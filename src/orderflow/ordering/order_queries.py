"""Order reads of the API: one order, its timeline, a filtered listing with keyset cursors."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

import asyncpg

from orderflow.domain.bounds import utc_instant
from orderflow.domain.errors import InvalidRequest, NotFound
from orderflow.domain.model import Order, Page, TimelineEntry
from orderflow.domain.orders import OrderStatus
from orderflow.ordering import store as orders


async def get_order(
    pool: asyncpg.Pool, *, order_id: uuid.UUID, owner: uuid.UUID | None = None
) -> Order:
    """One order with lines and timeline; ``owner`` hides other customers' orders."""
    async with pool.acquire() as conn:
        found = await orders.get(conn, order_id)
    if found is None or (owner is not None and found.customer_id != owner):
        raise NotFound(f"order {order_id} does not exist")
    return found


async def order_timeline(
    pool: asyncpg.Pool,
    *,
    order_id: uuid.UUID,
    after: int,
    limit: int,
    owner: uuid.UUID | None = None,
) -> Page[TimelineEntry]:
    """A page of an order's timeline, oldest first."""
    async with pool.acquire() as conn:
        found = await orders.get(conn, order_id, with_details=False)
        if found is None or (owner is not None and found.customer_id != owner):
            raise NotFound(f"order {order_id} does not exist")
        page = await orders.timeline_page(conn, order_id, after=after, limit=limit)
    cursor = str(page[-1][0]) if len(page) == limit else None
    return Page(items=[entry for _, entry in page], next_cursor=cursor)


def encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    """An opaque keyset cursor for order listings."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{order_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Undo ``encode_cursor``; raises InvalidRequest on garbage."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
        at, _, oid = raw.partition("|")
        return utc_instant(datetime.fromisoformat(at)), uuid.UUID(oid)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the cursor is not one this API issued") from None


async def list_orders(
    pool: asyncpg.Pool,
    *,
    customer_id: uuid.UUID | None = None,
    status: OrderStatus | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Order]:
    """Orders newest first, filtered, keyset-paged."""
    before = decode_cursor(cursor) if cursor else None
    async with pool.acquire() as conn:
        found = await orders.search(
            conn,
            customer_id=customer_id,
            status=status,
            created_from=created_from,
            created_to=created_to,
            before=before,
            limit=limit,
        )
    next_cursor = encode_cursor(found[-1].created_at, found[-1].id) if len(found) == limit else None
    return Page(items=found, next_cursor=next_cursor)

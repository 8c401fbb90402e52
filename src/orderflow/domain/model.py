"""Plain domain records returned by the service layer (never ORM rows or HTTP bodies)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from orderflow.domain.orders import OrderStatus


@dataclass(frozen=True, slots=True)
class Product:
    id: uuid.UUID
    sku: str
    name: str
    description: str
    price: int
    currency: str
    stock: int
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Customer:
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OrderLine:
    line_no: int
    product_id: uuid.UUID
    sku: str
    name: str
    unit_price: int
    quantity: int
    line_total: int


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    event: str
    at: datetime
    actor: str
    status: OrderStatus
    event_id: uuid.UUID
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Order:
    id: uuid.UUID
    customer_id: uuid.UUID
    status: OrderStatus
    currency: str
    subtotal: int
    discount: int
    tax: int
    total: int
    pricing: str
    cancel_reason: str | None
    created_at: datetime
    updated_at: datetime
    lines: list[OrderLine] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A slice of a listing and how to get the next one."""

    items: list[T]
    next_cursor: str | None = None
    total: int | None = None


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """A timeline entry in the order feed: ``id`` is the entry's (what streams send as their
    frames' ids); ``position`` is its place in commit order (what they resume by)."""

    position: int
    id: int
    order_id: uuid.UUID
    customer_id: uuid.UUID
    event_id: uuid.UUID
    event: str
    actor: str
    status: OrderStatus
    at: datetime
    data: dict[str, Any]

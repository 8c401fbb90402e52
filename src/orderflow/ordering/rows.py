"""Mapping database records to domain records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orderflow.domain.model import Customer, Order, OrderLine, TimelineEntry
from orderflow.domain.orders import OrderStatus

ORDER_COLUMNS = (
    "id, customer_id, status, currency, subtotal, discount, tax, total, pricing, cancel_reason,"
    " created_at, updated_at"
)


def customer(row: Mapping[str, Any]) -> Customer:
    return Customer(**dict(row))


def order_line(row: Mapping[str, Any]) -> OrderLine:
    return OrderLine(**dict(row))


def timeline_entry(row: Mapping[str, Any]) -> TimelineEntry:
    return TimelineEntry(
        event=row["event_type"],
        at=row["occurred_at"],
        actor=row["actor"],
        status=OrderStatus(row["status_after"]),
        event_id=row["event_id"],
        data=row["data"],
    )


def order(
    row: Mapping[str, Any],
    lines: list[OrderLine] | None = None,
    timeline: list[TimelineEntry] | None = None,
) -> Order:
    values = dict(row)
    values["status"] = OrderStatus(values["status"])
    return Order(**values, lines=lines or [], timeline=timeline or [])

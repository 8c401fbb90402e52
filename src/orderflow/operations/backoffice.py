"""The back office's reads: find orders, and everything known about one of them.

Every query is bounded (a LIMIT, an order's own rows) and served by an index, so the pages
cost the same on a database of a thousand orders as on one of millions. Actions taken from
the back office are recorded in ``admin_actions`` (who, when, what) by ``record_action``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from orderflow.domain.errors import InvalidRequest, NotFound
from orderflow.domain.model import Order
from orderflow.domain.orders import OrderStatus, is_terminal
from orderflow.ordering import decode_cursor, encode_cursor, get_order


@dataclass(frozen=True, slots=True)
class OrderQuery:
    """What an operator searches orders by; every field optional."""

    id_prefix: str | None = None
    email: str | None = None
    status: OrderStatus | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    total_min: int | None = None
    total_max: int | None = None


def id_range(prefix: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The uuids that start with ``prefix`` (hex digits, dashes ignored): a primary-key range."""
    digits = prefix.replace("-", "").lower()
    if not digits or len(digits) > 32 or any(c not in "0123456789abcdef" for c in digits):
        raise InvalidRequest(f"an order id prefix is 1 to 32 hex digits, not {prefix!r}")
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


_SEARCH = """
SELECT o.id, o.customer_id, c.email, o.status, o.total, o.currency, o.created_at,
       o.updated_at, v.due_at AS overdue_since
FROM orders o JOIN customers c ON c.id = o.customer_id
LEFT JOIN order_overdue v ON v.order_id = o.id AND v.status = o.status
WHERE {where}
ORDER BY o.created_at DESC, o.id DESC LIMIT {limit}
"""


async def search_orders(
    pool: asyncpg.Pool, *, query: OrderQuery, cursor: str | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], str | None]:
    """Orders matching ``query``, newest first, keyset-paged; and the next page's cursor."""
    clauses: list[str] = ["TRUE"]
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.id_prefix:
        low, high = id_range(query.id_prefix)
        clauses.append(f"o.id BETWEEN {arg(low)} AND {arg(high)}")
    if query.email:
        # Equality on lower(email) is served by the unique index; a part of an address
        # searches every customer, still bounded by the LIMIT of the orders.
        needle = query.email.strip().lower()
        if "@" in needle and not needle.startswith("@"):
            clauses.append(f"lower(c.email) = {arg(needle)}")
        else:
            clauses.append(f"strpos(lower(c.email), {arg(needle)}) > 0")
    if query.status is not None:
        clauses.append(f"o.status = {arg(query.status.value)}")
    if query.created_from is not None:
        clauses.append(f"o.created_at >= {arg(query.created_from)}")
    if query.created_to is not None:
        clauses.append(f"o.created_at < {arg(query.created_to)}")
    if query.total_min is not None:
        clauses.append(f"o.total >= {arg(query.total_min)}")
    if query.total_max is not None:
        clauses.append(f"o.total <= {arg(query.total_max)}")
    if cursor:
        at, last = decode_cursor(cursor)
        clauses.append(f"(o.created_at, o.id) < ({arg(at)}, {arg(last)})")
    sql = _SEARCH.format(where=" AND ".join(clauses), limit=arg(limit))
    records = await pool.fetch(sql, *args)
    found = [
        {
            "id": str(r["id"]),
            "customer_id": str(r["customer_id"]),
            "email": r["email"],
            "status": r["status"],
            "total": r["total"],
            "currency": r["currency"],
            "created_at": r["created_at"],
            "updated_at": r["updated_at"],
            "overdue_since": r["overdue_since"],
        }
        for r in records
    ]
    last_row = records[-1] if len(records) == limit else None
    return found, encode_cursor(last_row["created_at"], last_row["id"]) if last_row else None


@dataclass
class Dossier:
    """Everything known about one order, for its back-office page."""

    order: Order
    customer: dict[str, Any]
    payments: list[dict[str, Any]]
    transactions: list[dict[str, Any]]
    stock_movements: list[dict[str, Any]]
    notifications: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    outbox: list[dict[str, Any]]  # the order's events as the outbox holds them
    applied: dict[str, list[str]]  # event id -> the handlers that applied it (inbox)
    overdue: dict[str, Any] | None
    now: datetime
    steps: list[dict[str, Any]] = field(default_factory=list)


_DETAILS = {
    "customer": "SELECT id, email, name FROM customers WHERE id = $1",
    "payments": "SELECT id, attempt, status, amount, currency, gateway_reference, created_at, "
    "updated_at FROM payments WHERE order_id = $1 ORDER BY attempt",
    "transactions": "SELECT kind, amount, currency, gateway_reference, detail, created_at "
    "FROM payment_transactions WHERE order_id = $1 ORDER BY id",
    "stock_movements": "SELECT m.kind, m.quantity, m.created_at, p.sku, p.name "
    "FROM stock_movements m JOIN products p ON p.id = m.product_id "
    "WHERE m.order_id = $1 ORDER BY m.id",
    "notifications": "SELECT recipient, channel, subject, created_at, sent_at "
    "FROM notifications WHERE order_id = $1 ORDER BY id",
    "actions": "SELECT at, actor, action, detail FROM admin_actions WHERE order_id = $1 "
    "ORDER BY id",
    "outbox": "SELECT event_id, event_type, created_at, published_at FROM outbox "
    "WHERE order_id = $1 ORDER BY id",
}
_APPLIED = """
SELECT i.event_id, array_agg(i.handler ORDER BY i.handler) AS handlers
FROM inbox i WHERE i.event_id = ANY($1::uuid[]) GROUP BY i.event_id
"""


async def order_dossier(pool: asyncpg.Pool, *, order_id: uuid.UUID) -> Dossier:
    """The order with its lines, payments, stock, notifications, events and actions."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        order = await get_order(conn, order_id)
        if order is None:
            raise NotFound(f"order {order_id} does not exist")
        found: dict[str, list[dict[str, Any]]] = {}
        for name, sql in _DETAILS.items():
            key = order.customer_id if name == "customer" else order_id
            found[name] = [dict(r) for r in await conn.fetch(sql, key)]
        event_ids = [e["event_id"] for e in found["outbox"]]
        applied = {
            str(r["event_id"]): list(r["handlers"]) for r in await conn.fetch(_APPLIED, event_ids)
        }
        overdue = await conn.fetchrow(
            "SELECT status, since, due_at FROM order_overdue WHERE order_id = $1 AND status = $2",
            order_id,
            order.status.value,
        )
        now: datetime = await conn.fetchval("SELECT now()")
    for action in found["actions"]:
        action["detail"] = _json(action["detail"])
    dossier = Dossier(
        order=order,
        customer=found["customer"][0] if found["customer"] else {},
        payments=found["payments"],
        transactions=found["transactions"],
        stock_movements=found["stock_movements"],
        notifications=found["notifications"],
        actions=found["actions"],
        outbox=found["outbox"],
        applied=applied,
        overdue=dict(overdue) if overdue else None,
        now=now,
    )
    dossier.steps = time_in_each_step(dossier)
    return dossier


def time_in_each_step(dossier: Dossier) -> list[dict[str, Any]]:
    """The timeline with, for each entry, how long the order stayed where it left it: until
    the next entry, or until now for the last one of an order still on its way."""
    timeline = dossier.order.timeline
    steps = []
    for i, entry in enumerate(timeline):
        if i + 1 < len(timeline):
            until: datetime | None = timeline[i + 1].at
        else:
            until = None if is_terminal(dossier.order.status) else dossier.now
        steps.append(
            {
                "event": entry.event,
                "at": entry.at,
                "actor": entry.actor,
                "status": entry.status.value,
                "data": entry.data,
                "spent_s": (until - entry.at).total_seconds() if until else None,
                "ongoing": i + 1 == len(timeline) and until is not None,
            }
        )
    return steps


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


async def record_action(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    actor: str,
    action: str,
    order_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record that ``actor`` did ``action`` (on ``order_id``): the back office's audit trail."""
    await conn.execute(
        "INSERT INTO admin_actions (actor, action, order_id, detail) VALUES ($1, $2, $3, $4)",
        actor,
        action,
        order_id,
        detail or {},
    )

"""The audit: checks the system's invariants over the database and reports every violation.

Operators run it against production, so it only ever reads: it walks orders and products in
keyset pages, one short statement per page under READ COMMITTED, and takes no locks. Each page
is read by a single statement, so an order's row, timeline, payments and stock movements come
from one snapshot and a saga step committing meanwhile cannot make a healthy order look broken.

Checks that only hold once an order has settled (it is terminal, its money and stock are
squared) apply to orders older than the grace period; the shape of the timeline and the stock
ledger must hold at every instant. An order awaiting payment is not stuck while the unpaid-order
TTL runs (the expiry sweep cancels it when it passes), so it is stale only once it has been
awaiting payment for longer than the TTL plus the grace.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

import asyncpg

from orderflow.domain.orders import TERMINAL, TRANSITIONS, OrderStatus

S = OrderStatus


class Check(StrEnum):
    """The kinds of violation the audit looks for."""

    STALE = "stale_order"  # not terminal after the grace (unpaid: after the TTL and the grace)
    TIMELINE = "illegal_timeline"  # the timeline is not a walk of the state machine
    APPLIED_TWICE = "applied_twice"  # a once-only event appears twice on one order
    UNPUBLISHED = "unpublished_event"  # an outbox row the relay never published
    STOCK_LEDGER = "stock_ledger"  # products.stock is not the sum of its movements
    NEGATIVE_STOCK = "negative_stock"
    RESERVATION = "reservation"  # the stock an order holds does not match its status and lines
    MONEY = "money"  # charges minus refunds do not match what the order should have paid


# Timeline events that record something without moving the order.
INFORMATIONAL: frozenset[str] = frozenset(
    {
        "payment.processed",
        "payment.processed_after_cancel",
        "inventory.insufficient",
        "payment.refunded",
        "inventory.released",
    }
)
# Events an order can see at most once: a second one means a handler applied its event twice.
ONCE_PER_ORDER: frozenset[str] = INFORMATIONAL | {
    "order.created",
    "order.paid",
    "inventory.checked",
    "order.prepared",
    "order.shipped",
    "order.delivered",
    "order.cancelled",
}
HOLDS_STOCK: frozenset[OrderStatus] = frozenset({S.RESERVED, S.PREPARED, S.SHIPPED, S.DELIVERED})
HOLDS_NOTHING: frozenset[OrderStatus] = frozenset(
    {S.CREATED, S.AWAITING_PAYMENT, S.PAYMENT_PENDING, S.PAID}
)
ALL_CHECKS: frozenset[Check] = frozenset(Check)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant, with the order or product it concerns."""

    check: Check
    detail: str
    order_id: uuid.UUID | None = None
    product_id: uuid.UUID | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        out = asdict(self)
        out["check"] = self.check.value
        for key in ("order_id", "product_id"):
            out[key] = str(out[key]) if out[key] else None
        return out


@dataclass
class AuditReport:
    """What one audit run found and how much it looked at."""

    violations: list[Violation] = field(default_factory=list)
    orders: int = 0
    products: int = 0
    checks: frozenset[Check] = ALL_CHECKS

    @property
    def ok(self) -> bool:
        """Whether no invariant is broken."""
        return not self.violations

    def counts(self) -> dict[str, int]:
        """Violations per check."""
        return dict(Counter(v.check.value for v in self.violations))


_ORDER_PAGE = """
SELECT o.id, o.status, o.total, o.payment_token IS NOT NULL AS has_token,
       o.created_at < now() - $3::interval AS settled,
       o.updated_at < now() - $3::interval - $4::interval AS unpaid_overdue,
       tl.events, tl.statuses, pt.charged, pt.refunded,
       l.products AS line_products, l.quantities AS line_quantities,
       m.products AS move_products, m.kinds AS move_kinds, m.quantities AS move_quantities
FROM orders o
LEFT JOIN LATERAL (
    SELECT array_agg(event_type ORDER BY id) AS events, array_agg(status_after ORDER BY id)
           AS statuses
    FROM order_timeline WHERE order_id = o.id
) tl ON true
LEFT JOIN LATERAL (
    SELECT coalesce(sum(amount) FILTER (WHERE kind = 'charge'), 0)::bigint AS charged,
           coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0)::bigint AS refunded
    FROM payment_transactions WHERE order_id = o.id
) pt ON true
LEFT JOIN LATERAL (
    SELECT array_agg(product_id) AS products, array_agg(quantity) AS quantities
    FROM order_lines WHERE order_id = o.id
) l ON true
LEFT JOIN LATERAL (
    SELECT array_agg(product_id) AS products, array_agg(kind) AS kinds,
           array_agg(quantity) AS quantities
    FROM stock_movements WHERE order_id = o.id
) m ON true
WHERE o.id > $1
ORDER BY o.id
LIMIT $2
"""

_PRODUCT_PAGE = """
SELECT p.id, p.stock, coalesce(m.total, 0)::bigint AS ledger
FROM products p
LEFT JOIN LATERAL (
    SELECT sum(quantity) AS total FROM stock_movements WHERE product_id = p.id
) m ON true
WHERE p.id > $1
ORDER BY p.id
LIMIT $2
"""

_UNPUBLISHED = """
SELECT id, event_id, event_type, order_id FROM outbox
WHERE published_at IS NULL AND created_at < now() - $1::interval AND id > $2
ORDER BY id LIMIT $3
"""

_LOWEST_ID = uuid.UUID(int=0)


async def run_audit(
    pool: asyncpg.Pool,
    *,
    grace_s: float = 60.0,
    unpaid_ttl_s: float = 0.0,
    page_size: int = 500,
    checks: Iterable[Check] | None = None,
) -> AuditReport:
    """Check every invariant over the whole database; read-only, paged, lock-free.

    ``unpaid_ttl_s`` is the unpaid-order TTL (``Settings.unpaid_order_ttl_s``): how long an order
    may await payment, on top of the grace, before it counts as stale.
    """
    wanted = frozenset(checks) if checks is not None else ALL_CHECKS
    report = AuditReport(checks=wanted)
    grace = timedelta(seconds=grace_s)
    unpaid_ttl = timedelta(seconds=unpaid_ttl_s)
    order_checks = wanted - {Check.UNPUBLISHED, Check.STOCK_LEDGER, Check.NEGATIVE_STOCK}
    if order_checks:
        async for page in _keyset_pages(pool, _ORDER_PAGE, page_size, grace, unpaid_ttl):
            for row in page:
                report.violations.extend(v for v in check_order(row) if v.check in order_checks)
            report.orders += len(page)
    if wanted & {Check.STOCK_LEDGER, Check.NEGATIVE_STOCK}:
        async for page in _keyset_pages(pool, _PRODUCT_PAGE, page_size):
            for row in page:
                report.violations.extend(v for v in check_product(row) if v.check in wanted)
            report.products += len(page)
    if Check.UNPUBLISHED in wanted:
        report.violations.extend(await _unpublished(pool, grace, page_size))
    return report


async def _keyset_pages(
    pool: asyncpg.Pool, query: str, page_size: int, *extra: object
) -> AsyncIterator[list[asyncpg.Record]]:
    """Pages of ``query`` ($1 the last id seen, $2 the page size), one statement each."""
    after = _LOWEST_ID
    while True:
        page: list[asyncpg.Record] = await pool.fetch(query, after, page_size, *extra)
        yield page
        if len(page) < page_size:
            return
        after = page[-1]["id"]


async def _unpublished(pool: asyncpg.Pool, grace: timedelta, page_size: int) -> list[Violation]:
    found: list[Violation] = []
    after = 0
    while True:
        page = await pool.fetch(_UNPUBLISHED, grace, after, page_size)
        found.extend(
            Violation(
                Check.UNPUBLISHED,
                f"outbox row {r['id']} ({r['event_type']}, event {r['event_id']}) "
                "was never published",
                order_id=r["order_id"],
            )
            for r in page
        )
        if len(page) < page_size:
            return found
        after = page[-1]["id"]


def check_product(row: Mapping[str, Any]) -> list[Violation]:
    """Stock invariants of one product: never negative, equal to its movement ledger."""
    found: list[Violation] = []
    pid = row["id"]
    if row["stock"] < 0:
        found.append(Violation(Check.NEGATIVE_STOCK, f"stock is {row['stock']}", product_id=pid))
    if row["stock"] != row["ledger"]:
        found.append(
            Violation(
                Check.STOCK_LEDGER,
                f"stock is {row['stock']} but its movements add up to {row['ledger']}",
                product_id=pid,
            )
        )
    return found


def check_order(row: Mapping[str, Any]) -> list[Violation]:
    """Every per-order invariant of one order row with its aggregates."""
    oid: uuid.UUID = row["id"]
    status = OrderStatus(row["status"])
    settled: bool = row["settled"]
    found: list[Violation] = []
    if status is S.AWAITING_PAYMENT:
        # The expiry sweep cancels it once it has been unpaid for the TTL (since updated_at).
        if row["unpaid_overdue"]:
            found.append(
                Violation(
                    Check.STALE,
                    "still awaiting_payment after the unpaid-order TTL and the grace period",
                    order_id=oid,
                )
            )
    elif settled and status not in TERMINAL:
        found.append(
            Violation(Check.STALE, f"still {status.value} after the grace period", order_id=oid)
        )
    found += check_timeline(
        oid, status, row["has_token"], row["events"] or [], row["statuses"] or []
    )
    found += _check_money(oid, status, settled, row["total"], row["charged"], row["refunded"])
    lines = dict(zip(row["line_products"] or [], row["line_quantities"] or [], strict=True))
    moves = list(
        zip(
            row["move_products"] or [],
            row["move_kinds"] or [],
            row["move_quantities"] or [],
            strict=True,
        )
    )
    found += check_reservation(oid, status, settled, lines, moves)
    return found


def check_timeline(
    oid: uuid.UUID,
    status: OrderStatus,
    has_token: bool,
    events: Sequence[str],
    statuses: Sequence[str],
) -> list[Violation]:
    """The timeline starts with order.created and then only takes edges of the state machine."""
    if not events:
        return [Violation(Check.TIMELINE, "the order has no timeline", order_id=oid)]
    found: list[Violation] = []
    repeated = sorted(e for e, n in Counter(events).items() if n > 1 and e in ONCE_PER_ORDER)
    if repeated:
        found.append(
            Violation(
                Check.APPLIED_TWICE,
                f"once-only events appear more than once: {', '.join(repeated)}",
                order_id=oid,
            )
        )
    if events[0] != "order.created":
        found.append(
            Violation(Check.TIMELINE, f"the first event is {events[0]}, not order.created", oid)
        )
        return found
    # An order starts created (it came with a payment token) or awaiting payment. The pay call
    # stores a token later, so a token does not tell which; a created start without one is wrong.
    current = S(statuses[0])
    if current not in (S.CREATED, S.AWAITING_PAYMENT) or (current is S.CREATED and not has_token):
        found.append(
            Violation(Check.TIMELINE, f"order.created left it {current.value}", order_id=oid)
        )
        return found
    for n, (event, after) in enumerate(zip(events[1:], statuses[1:], strict=True), start=2):
        expected = TRANSITIONS[current].get(event)
        if expected is None and event in INFORMATIONAL:
            expected = current
        if expected is None or after != expected.value:
            why = (
                f"event {n} ({event}) moved it from {current.value} to {after}"
                if expected is not None
                else f"event {n} ({event}) is not allowed from {current.value}"
            )
            found.append(Violation(Check.TIMELINE, why, order_id=oid))
            return found
        current = expected
    if current is not status:
        found.append(
            Violation(
                Check.TIMELINE,
                f"the timeline ends in {current.value} but the order is {status.value}",
                order_id=oid,
            )
        )
    return found


def _check_money(
    oid: uuid.UUID, status: OrderStatus, settled: bool, total: int, charged: int, refunded: int
) -> list[Violation]:
    kept = charged - refunded
    if refunded > charged:
        why = f"refunded {refunded} but charged only {charged}"
    elif kept > total:
        why = f"kept {kept} on an order of {total}"
    elif settled and status is S.DELIVERED and kept != total:
        why = f"delivered, total {total}, but kept {kept} (charged {charged}, refunded {refunded})"
    elif settled and status is S.CANCELLED and kept != 0:
        why = f"cancelled but kept {kept} (charged {charged}, refunded {refunded})"
    else:
        return []
    return [Violation(Check.MONEY, why, order_id=oid)]


def check_reservation(
    oid: uuid.UUID,
    status: OrderStatus,
    settled: bool,
    lines: Mapping[uuid.UUID, int],
    moves: Sequence[tuple[uuid.UUID, str, int]],
) -> list[Violation]:
    """The stock an order holds matches its status: all its lines once reserved, or nothing."""
    net: dict[uuid.UUID, int] = defaultdict(int)
    reserved: dict[uuid.UUID, list[int]] = defaultdict(list)
    released: dict[uuid.UUID, list[int]] = defaultdict(list)
    for product, kind, quantity in moves:
        net[product] += quantity
        (reserved if kind == "reserve" else released)[product].append(quantity)
    strays = sorted(str(p) for p in net if p not in lines)
    problems: list[str] = []
    if strays:
        problems.append(f"moves stock of products not on the order: {', '.join(strays)}")
    if status in HOLDS_STOCK:
        for product, quantity in lines.items():
            if reserved.get(product) != [-quantity] or released.get(product):
                problems.append(
                    f"{status.value} but product {product} has reserve {reserved.get(product, [])}"
                    f" and release {released.get(product, [])}, expected reserve [{-quantity}]"
                )
    elif status in HOLDS_NOTHING:
        if moves:
            problems.append(f"{status.value} but holds stock: {dict(net)}")
    elif settled:  # cancelled: whatever was reserved went back on the shelf
        held = {str(p): -q for p, q in net.items() if q}
        if held:
            problems.append(f"cancelled but still holds {held}")
    return [Violation(Check.RESERVATION, p, order_id=oid) for p in problems]

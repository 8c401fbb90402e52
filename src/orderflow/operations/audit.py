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
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg

from orderflow.operations.invariants import (
    ALL_CHECKS,
    Check,
    Violation,
    check_order,
    check_product,
)


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
       tl.events, tl.statuses, pt.charged, pt.refunded, pt.held,
       l.products AS line_products, l.quantities AS line_quantities,
       m.products AS move_products, m.kinds AS move_kinds, m.quantities AS move_quantities
FROM orders o
LEFT JOIN LATERAL (
    SELECT array_agg(event_type ORDER BY id) AS events, array_agg(status_after ORDER BY id)
           AS statuses
    FROM order_timeline WHERE order_id = o.id
) tl ON true
LEFT JOIN LATERAL (
    SELECT coalesce(sum(amount) FILTER (WHERE kind IN ('charge', 'capture')), 0)::bigint
               AS charged,
           coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0)::bigint AS refunded,
           -- authorizations neither captured nor voided: money held at the gateway
           (coalesce(sum(amount) FILTER (WHERE kind = 'authorize'), 0)
            - coalesce(sum(amount) FILTER (WHERE kind IN ('capture', 'void')), 0))::bigint
               AS held
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

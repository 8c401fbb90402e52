"""The payment gateway's own ledger against our payments: every authorization, capture, void
and refund the gateway recorded for an order is one row of ``payment_transactions``, and the
other way round. A difference is money the customer sees that we do not (or the reverse): a
double capture, a refund we never recorded, a void that never reached the gateway.

Read from the gateway's API (``GET /v1/ledger``, paged), as any provider's statement would be.
Run it on a settled system: an order moving at that instant may show its call in flight.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Collection

import asyncpg
import httpx

from orderflow.operations.invariants import Check, Violation

KINDS = ("authorize", "capture", "void", "refund")
Counts = Counter[tuple[uuid.UUID, str]]

_OURS = """
SELECT order_id, kind, count(*) AS n FROM payment_transactions
WHERE kind = ANY($1::text[]) GROUP BY order_id, kind
"""


async def gateway_counts(client: httpx.AsyncClient, *, page: int = 5000) -> Counts:
    """(order, kind) -> movements in the gateway's ledger; entries without an order of ours
    (another merchant's, a manual test) are left out."""
    counts: Counts = Counter()
    after = 0
    while True:
        response = await client.get("/v1/ledger", params={"after": after, "limit": page})
        response.raise_for_status()
        entries = response.json()["entries"]
        for entry in entries:
            try:
                order_id = uuid.UUID(str(entry.get("order_id")))
            except ValueError:
                continue
            if entry["kind"] in KINDS:
                counts[(order_id, entry["kind"])] += 1
        if len(entries) < page:
            return counts
        after = entries[-1]["id"]


async def our_counts(pool: asyncpg.Pool) -> Counts:
    """(order, kind) -> rows of ``payment_transactions``."""
    return Counter(
        {(r["order_id"], r["kind"]): int(r["n"]) for r in await pool.fetch(_OURS, list(KINDS))}
    )


def compare(
    theirs: Counts, ours: Counts, *, only: Collection[uuid.UUID] | None = None
) -> list[Violation]:
    """One violation per order whose movements differ, kind by kind (pure)."""
    orders = {o for o, _ in theirs} | {o for o, _ in ours}
    if only is not None:
        orders &= set(only)
    found = []
    for order_id in sorted(orders):
        differ = [
            f"{kind}: gateway {theirs[(order_id, kind)]}, ours {ours[(order_id, kind)]}"
            for kind in KINDS
            if theirs[(order_id, kind)] != ours[(order_id, kind)]
        ]
        if differ:
            found.append(Violation(Check.GATEWAY_LEDGER, "; ".join(differ), order_id=order_id))
    return found


async def audit_gateway_ledger(
    pool: asyncpg.Pool, client: httpx.AsyncClient, *, only: Collection[uuid.UUID] | None = None
) -> list[Violation]:
    """The orders (all, or ``only`` these) whose gateway ledger and payments differ."""
    return compare(await gateway_counts(client), await our_counts(pool), only=only)

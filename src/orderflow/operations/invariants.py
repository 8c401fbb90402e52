"""The invariants the audit checks, over one order's or one product's row with its aggregates:
pure functions that return the violations they find.

Checks that only hold once an order has settled (it is terminal, its money and stock are
squared) apply to orders older than the grace period (the row says whether it is); the shape of
the timeline and the stock ledger must hold at every instant.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

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
    # the gateway's own ledger and our payments differ (``orderflow audit --gateway``)
    GATEWAY_LEDGER = "gateway_ledger"


# Timeline events that record something without moving the order.
INFORMATIONAL: frozenset[str] = frozenset(
    {
        "payment.processed",
        "payment.processed_after_cancel",
        "inventory.insufficient",
        "payment.refunded",
        "payment.voided",
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
    found += _check_money(
        oid, status, settled, row["total"], row["charged"], row["refunded"], row.get("held") or 0
    )
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
    oid: uuid.UUID,
    status: OrderStatus,
    settled: bool,
    total: int,
    charged: int,
    refunded: int,
    held: int = 0,
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
    elif settled and status is S.CANCELLED and held:
        why = f"cancelled but an authorization of {held} is still held at the gateway"
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

"""The order state machine: every status an order can be in and the edges between them."""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Final

from orderflow.domain.errors import IllegalTransition


class OrderStatus(StrEnum):
    """Where an order is on its journey."""

    CREATED = "created"  # accepted with a payment method; payment not started yet
    AWAITING_PAYMENT = "awaiting_payment"  # no payment method, or the last one was declined
    PAYMENT_PENDING = "payment_pending"  # a charge is in flight at the gateway
    PAID = "paid"
    RESERVED = "reserved"  # stock for every line is held
    PREPARED = "prepared"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class CancelReason(StrEnum):
    """Why an order was cancelled."""

    CUSTOMER = "customer_request"
    OUT_OF_STOCK = "out_of_stock"
    PAYMENT_EXPIRED = "payment_expired"
    ADMIN = "admin"


S = OrderStatus

# status -> {event that moves it: next status}. The one definition of the lifecycle; the
# docs diagram is generated from it.
TRANSITIONS: Final = MappingProxyType(
    {
        S.CREATED: {
            "payment.initiated": S.PAYMENT_PENDING,
            "order.cancelled": S.CANCELLED,
        },
        S.AWAITING_PAYMENT: {
            "payment.initiated": S.PAYMENT_PENDING,
            "order.cancelled": S.CANCELLED,
        },
        S.PAYMENT_PENDING: {
            "order.paid": S.PAID,
            "payment.failed": S.AWAITING_PAYMENT,
            "order.cancelled": S.CANCELLED,
        },
        S.PAID: {
            "inventory.checked": S.RESERVED,
            "order.cancelled": S.CANCELLED,
        },
        S.RESERVED: {
            "order.prepared": S.PREPARED,
            "order.cancelled": S.CANCELLED,
        },
        S.PREPARED: {
            "order.shipped": S.SHIPPED,
            "order.cancelled": S.CANCELLED,
        },
        S.SHIPPED: {"order.delivered": S.DELIVERED},
        S.DELIVERED: {},
        S.CANCELLED: {},
    }
)

TERMINAL: Final = frozenset(s for s, edges in TRANSITIONS.items() if not edges)
CANCELLABLE: Final = frozenset(s for s, edges in TRANSITIONS.items() if "order.cancelled" in edges)


def initial_status(*, has_payment_method: bool) -> OrderStatus:
    """The status a newly placed order starts in."""
    return S.CREATED if has_payment_method else S.AWAITING_PAYMENT


def next_status(current: OrderStatus, event: str) -> OrderStatus:
    """The status that ``event`` moves an order in ``current`` to; raises if not allowed."""
    try:
        return TRANSITIONS[current][event]
    except KeyError:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (terminal)"
        raise IllegalTransition(
            f"an order that is {current.value!r} cannot take {event!r}; allowed: {allowed}",
            current_status=current.value,
            event=event,
        ) from None


def can_take(current: OrderStatus, event: str) -> bool:
    """Whether ``event`` is a legal move from ``current``."""
    return event in TRANSITIONS[current]


def is_terminal(status: OrderStatus) -> bool:
    """Whether the order has finished its journey."""
    return status in TERMINAL

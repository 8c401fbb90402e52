"""The saga's choreography as data: which step receives which events, and who hears of what.

Static: listing the saga's queues (``orderflow migrate``, the bench, the back office) needs no
database and no handler. The steps themselves live in their capabilities and name the
subscription they serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from orderflow.domain import events as ev


@dataclass(frozen=True, slots=True)
class Subscription:
    """A saga step's name (its queue and its inbox rows) and the event types it receives."""

    name: str
    event_types: tuple[str, ...]


# event type -> (recipient, subject) pairs. Every event type must have a subscriber somewhere:
# the relay treats an unroutable event as an error (a test checks the saga covers all).
RECIPIENTS: Final = MappingProxyType(
    {
        ev.OrderPlaced.TYPE: (("customer", "We received your order"),),
        ev.PaymentFailed.TYPE: (("customer", "Your payment was declined: please pay again"),),
        ev.OrderPaid.TYPE: (("customer", "Payment received"),),
        ev.InventoryChecked.TYPE: (("warehouse", "Order ready to prepare"),),
        ev.InventoryInsufficient.TYPE: (("supplier", "Restock needed"),),
        ev.OrderPrepared.TYPE: (("carrier", "Parcel ready for pick-up"),),
        ev.OrderShipped.TYPE: (("customer", "Your order has shipped"),),
        ev.OrderDelivered.TYPE: (("customer", "Your order was delivered"),),
        ev.OrderCancelled.TYPE: (("customer", "Your order was cancelled"),),
        ev.PaymentRefunded.TYPE: (("customer", "Your payment was refunded"),),
        ev.PaymentVoided.TYPE: (("customer", "Your payment was released: nothing was charged"),),
        ev.InventoryReleased.TYPE: (("warehouse", "Reserved stock returned to the shelf"),),
    }
)

PAYMENTS_INITIATE: Final = Subscription("payments.initiate", (ev.OrderPlaced.TYPE,))
PAYMENTS_CHARGE: Final = Subscription("payments.charge", (ev.PaymentInitiated.TYPE,))
ORDERS_MARK_PAID: Final = Subscription("orders.mark_paid", (ev.PaymentProcessed.TYPE,))
# The authorization is captured once the stock is reserved (ADR 0029).
PAYMENTS_CAPTURE: Final = Subscription("payments.capture", (ev.InventoryChecked.TYPE,))
# An authorization recorded on an order already cancelled has its own event (ADR 0016); the
# step voids an authorization, or refunds a capture.
COMPENSATION_REFUND: Final = Subscription(
    "compensation.refund", (ev.OrderCancelled.TYPE, ev.PaymentProcessedAfterCancel.TYPE)
)
INVENTORY_RESERVE: Final = Subscription("inventory.reserve", (ev.OrderPaid.TYPE,))
COMPENSATION_RELEASE: Final = Subscription("compensation.release", (ev.OrderCancelled.TYPE,))
NOTIFICATIONS_SEND: Final = Subscription("notifications.send", tuple(RECIPIENTS))
# The simulated warehouse and carrier (``ORDERFLOW_AUTOPILOT``).
AUTOPILOT_WAREHOUSE: Final = Subscription("autopilot.warehouse", (ev.InventoryChecked.TYPE,))
AUTOPILOT_CARRIER: Final = Subscription(
    "autopilot.carrier", (ev.OrderPrepared.TYPE, ev.OrderShipped.TYPE)
)

CORE: Final = (
    PAYMENTS_INITIATE,
    PAYMENTS_CHARGE,
    ORDERS_MARK_PAID,
    PAYMENTS_CAPTURE,
    COMPENSATION_REFUND,
    INVENTORY_RESERVE,
    COMPENSATION_RELEASE,
    NOTIFICATIONS_SEND,
)
AUTOPILOT: Final = (AUTOPILOT_WAREHOUSE, AUTOPILOT_CARRIER)


def subscriptions(*, autopilot: bool) -> tuple[Subscription, ...]:
    """Every step of the saga; the autopilot's when it runs."""
    return CORE + AUTOPILOT if autopilot else CORE

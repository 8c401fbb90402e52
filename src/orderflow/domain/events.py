"""Events: the envelope every message travels in and one typed payload per event type.

Class names are past tense (``OrderPlaced``); ``TYPE`` is the wire name the spec uses
(``order.created``). The event catalogue (``docs/events.md``, ``GET /api/v1/events/catalogue``)
is generated from ``EVENT_TYPES``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    """Base of every event payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1


class Line(BaseModel):
    model_config = ConfigDict(frozen=True)

    product_id: uuid.UUID
    sku: str
    quantity: int = Field(gt=0)
    unit_price: int = Field(ge=0)


class OrderPlaced(Event):
    """A customer placed an order; it is stored and priced."""

    TYPE = "order.created"
    customer_id: uuid.UUID
    lines: list[Line]
    subtotal: int = Field(ge=0)
    discount: int = Field(ge=0)
    tax: int = Field(ge=0)
    total: int = Field(ge=0)
    currency: str
    has_payment_method: bool


class PaymentInitiated(Event):
    """A charge for the order was registered and is about to be sent to the gateway."""

    TYPE = "payment.initiated"
    payment_id: uuid.UUID
    attempt: int = Field(ge=1)
    amount: int = Field(ge=0)
    currency: str


class _Capture(Event):
    payment_id: uuid.UUID
    amount: int = Field(ge=0)
    currency: str
    gateway_reference: str


class PaymentProcessed(_Capture):
    """The gateway authorized the charge; it is captured once the stock is reserved."""

    TYPE = "payment.processed"


class PaymentProcessedAfterCancel(_Capture):
    """The gateway authorized the charge of an order cancelled meanwhile; it is voided."""

    TYPE = "payment.processed_after_cancel"


class PaymentFailed(Event):
    """The gateway declined the charge; the order waits for another payment method."""

    TYPE = "payment.failed"
    payment_id: uuid.UUID
    reason: str


class OrderPaid(Event):
    """The order is paid in full."""

    TYPE = "order.paid"
    payment_id: uuid.UUID
    amount: int = Field(ge=0)
    currency: str


class Reservation(BaseModel):
    model_config = ConfigDict(frozen=True)

    product_id: uuid.UUID
    quantity: int = Field(gt=0)


class InventoryChecked(Event):
    """Stock for every line of the order is reserved."""

    TYPE = "inventory.checked"
    reservations: list[Reservation]


class Shortage(BaseModel):
    model_config = ConfigDict(frozen=True)

    product_id: uuid.UUID
    requested: int
    available: int


class InventoryInsufficient(Event):
    """At least one line could not be reserved; nothing was reserved."""

    TYPE = "inventory.insufficient"
    shortages: list[Shortage]


class InventoryReleased(Event):
    """Stock held for a cancelled order went back on the shelf."""

    TYPE = "inventory.released"
    reservations: list[Reservation]


class OrderPrepared(Event):
    """The warehouse packed the order."""

    TYPE = "order.prepared"
    prepared_by: str


class OrderShipped(Event):
    """A carrier took the parcel."""

    TYPE = "order.shipped"
    carrier: str
    tracking_number: str


class OrderDelivered(Event):
    """The carrier confirmed delivery."""

    TYPE = "order.delivered"
    carrier: str


class OrderCancelled(Event):
    """The order will not be fulfilled; compensation follows if money or stock was taken."""

    TYPE = "order.cancelled"
    reason: str
    previous_status: str


class PaymentRefunded(Event):
    """A captured charge was returned to the customer."""

    TYPE = "payment.refunded"
    payment_id: uuid.UUID
    amount: int = Field(ge=0)
    currency: str
    reason: str


class PaymentVoided(Event):
    """The authorization of a cancelled order was released before any capture: the customer
    was never charged."""

    TYPE = "payment.voided"
    payment_id: uuid.UUID
    amount: int = Field(ge=0)
    currency: str
    reason: str


EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.TYPE: cls
    for cls in (
        OrderPlaced,
        PaymentInitiated,
        PaymentProcessed,
        PaymentProcessedAfterCancel,
        PaymentFailed,
        OrderPaid,
        InventoryChecked,
        InventoryInsufficient,
        InventoryReleased,
        OrderPrepared,
        OrderShipped,
        OrderDelivered,
        OrderCancelled,
        PaymentRefunded,
        PaymentVoided,
    )
}

# The eight steps of the happy path, in order, as the spec lists them.
HAPPY_PATH: Final = (
    "order.created",
    "payment.initiated",
    "payment.processed",
    "order.paid",
    "inventory.checked",
    "order.prepared",
    "order.shipped",
    "order.delivered",
)


def catalogue() -> list[dict[str, Any]]:
    """Every event type with its version, description and payload JSON schema."""
    return [
        {
            "type": name,
            "version": model.VERSION,
            "description": (model.__doc__ or "").strip(),
            "schema": model.model_json_schema(),
        }
        for name, model in EVENT_TYPES.items()
    ]


class UnknownEventType(ValueError):
    """An envelope names an event type this version does not know."""


class Envelope(BaseModel):
    """What travels on the bus and sits in the outbox: metadata around one event payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    type: str
    schema_version: int = Field(ge=1)
    occurred_at: datetime
    order_id: uuid.UUID | None
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    actor: str = "system"
    payload: dict[str, Any]

    @classmethod
    def wrap(
        cls,
        event: Event,
        *,
        order_id: uuid.UUID | None,
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
        actor: str = "system",
        occurred_at: datetime | None = None,
    ) -> Envelope:
        """Put ``event`` in a fresh envelope; a new correlation id starts a new conversation."""
        event_id = uuid.uuid4()
        return cls(
            event_id=event_id,
            type=event.TYPE,
            schema_version=event.VERSION,
            occurred_at=occurred_at or datetime.now(UTC),
            order_id=order_id,
            correlation_id=correlation_id or event_id,
            causation_id=causation_id,
            actor=actor,
            payload=event.model_dump(mode="json"),
        )

    def follow(self, event: Event, *, actor: str = "system") -> Envelope:
        """An envelope for an event caused by this one: same order and conversation."""
        return Envelope.wrap(
            event,
            order_id=self.order_id,
            correlation_id=self.correlation_id,
            causation_id=self.event_id,
            actor=actor,
        )

    def event(self) -> Event:
        """The typed payload; raises ``UnknownEventType`` or a validation error."""
        try:
            model = EVENT_TYPES[self.type]
        except KeyError:
            raise UnknownEventType(self.type) from None
        return model.model_validate(self.payload)

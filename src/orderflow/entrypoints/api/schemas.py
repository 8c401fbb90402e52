"""HTTP request and response bodies, with the examples shown in the OpenAPI document."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from orderflow.domain import model
from orderflow.domain.bounds import utc_instant
from orderflow.domain.orders import OrderStatus

MAX_MONEY = 10**12  # minor units; anything above is a typo, not a price
MAX_STOCK = 10**9
MAX_QUANTITY = 1000
MAX_LINES = 100


def no_nul(value: str) -> str:
    """PostgreSQL text cannot hold U+0000: refuse it here rather than fail in the database."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


# Characters that make a stored name lie when it is shown: C0/C1 controls (ANSI escape
# sequences start with ESC, U+001B) and the bidirectional overrides and isolates that
# reorder what follows them (U+202E turns "gpj.exe" into "exe.jpg").
_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROLS = "".join(chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))) + _BIDI_CONTROLS
_LINE_BREAKS = "\n\r\t"
# The same sets as JSON Schema patterns (the OpenAPI document says what is refused).
_REFUSED_RANGES = "\\u007f-\\u009f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"
NAME_PATTERN = f"^[^\\u0000-\\u001f{_REFUSED_RANGES}]*$"
TEXT_PATTERN = f"^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f{_REFUSED_RANGES}]*$"


def plain_name(value: str) -> str:
    """A one-line name: no control characters, no bidirectional overrides."""
    bad = next((c for c in value if c in _CONTROLS), None)
    if bad is not None:
        raise ValueError(f"must not contain control characters (U+{ord(bad):04X})")
    return value


def plain_text(value: str) -> str:
    """Free text: line breaks and tabs allowed, other controls and bidi overrides not."""
    bad = next((c for c in value if c in _CONTROLS and c not in _LINE_BREAKS), None)
    if bad is not None:
        raise ValueError(f"must not contain control characters (U+{ord(bad):04X})")
    return value


# Free text that is stored: only what a PostgreSQL text column can hold, and nothing that
# would make it lie when shown.
Text = Annotated[
    str, AfterValidator(plain_text), Field(json_schema_extra={"pattern": TEXT_PATTERN})
]
# An instant from outside: aware, in UTC, and one the database can store (naive means UTC).
Instant = Annotated[datetime, AfterValidator(utc_instant)]
# Counts and money are JSON integers: neither true/false nor "12" stand for a number.
StrictCount = Annotated[int, Field(strict=True)]

Sku = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    ),
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(plain_name),
    Field(json_schema_extra={"pattern": NAME_PATTERN}),
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
PaymentToken = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"sku": "MUG-001", "name": "Coffee mug", "price": 1250, "stock": 40}]
        },
    )
    sku: Sku
    name: Name
    price: StrictCount = Field(ge=0, le=MAX_MONEY, description="minor units: 1250 = 12.50")
    stock: StrictCount = Field(ge=0, le=MAX_STOCK)
    currency: Currency | None = Field(default=None, description="defaults to the shop currency")
    description: Text = Field(default="", max_length=2000)


class ProductPatch(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"price": 1490, "stock": 55}]}
    )
    sku: Sku | None = None
    name: Name | None = None
    price: StrictCount | None = Field(default=None, ge=0, le=MAX_MONEY)
    stock: StrictCount | None = Field(default=None, ge=0, le=MAX_STOCK)
    description: Text | None = Field(default=None, max_length=2000)


class ProductOut(BaseModel):
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

    @classmethod
    def of(cls, p: model.Product) -> ProductOut:
        return cls(**{f: getattr(p, f) for f in cls.model_fields})


class ProductPage(BaseModel):
    items: list[ProductOut]
    total: int
    next_offset: int | None


class CustomerIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"email": "ada@example.com", "name": "Ada Lovelace"}]},
    )
    email: EmailStr
    name: Name


class CustomerOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime


class LineIn(Strict):
    product_id: uuid.UUID
    quantity: StrictCount = Field(gt=0, le=MAX_QUANTITY)


class OrderIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "6f1c2a4e-3b7d-4c55-9f0e-2d8a1b3c4d5e",
                    "lines": [
                        {"product_id": "0b8e2f6a-1c3d-4e5f-8a9b-0c1d2e3f4a5b", "quantity": 2}
                    ],
                    "payment_token": "pm_approve",
                }
            ]
        },
    )
    customer_id: uuid.UUID | None = Field(
        default=None, description="required unless the caller's key belongs to a customer"
    )
    lines: list[LineIn] = Field(min_length=1, max_length=MAX_LINES)
    payment_token: PaymentToken | None = Field(
        default=None,
        description="pm_approve, pm_decline, pm_flaky or pm_slow with the simulator; "
        "omit it to pay later with POST /orders/{id}/pay",
    )


class PayIn(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"payment_token": "pm_approve"}]}
    )
    payment_token: PaymentToken


class ShipIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"carrier": "DHL", "tracking_number": "JD0146000035"}]},
    )
    carrier: Name
    tracking_number: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{4,40}$")] | None = (
        Field(default=None, description="generated when omitted")
    )


class DeliverIn(Strict):
    carrier: Name | None = Field(default=None, description="defaults to the shipping carrier")


class CancelIn(Strict):
    reason: Annotated[
        str,
        StringConstraints(min_length=1, max_length=200),
        AfterValidator(plain_text),
        Field(json_schema_extra={"pattern": TEXT_PATTERN}),
    ] = "customer_request"


class LineOut(BaseModel):
    line_no: int
    product_id: uuid.UUID
    sku: str
    name: str
    unit_price: int
    quantity: int
    line_total: int


class TimelineOut(BaseModel):
    event: str = Field(description="wire name of the event, e.g. order.created")
    at: datetime
    actor: str
    status: OrderStatus = Field(description="the order's status after this event")
    event_id: uuid.UUID
    data: dict[str, Any]


class OrderOut(BaseModel):
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
    lines: list[LineOut]
    timeline: list[TimelineOut]

    @classmethod
    def of(cls, o: model.Order) -> OrderOut:
        return cls(
            **{f: getattr(o, f) for f in cls.model_fields if f not in {"lines", "timeline"}},
            lines=[LineOut(**{f: getattr(li, f) for f in LineOut.model_fields}) for li in o.lines],
            timeline=[
                TimelineOut(**{f: getattr(t, f) for f in TimelineOut.model_fields})
                for t in o.timeline
            ],
        )


class OrderSummary(BaseModel):
    id: uuid.UUID
    customer_id: uuid.UUID
    status: OrderStatus
    currency: str
    total: int
    created_at: datetime
    updated_at: datetime


class OrderPage(BaseModel):
    items: list[OrderSummary]
    next_cursor: str | None


class TimelinePage(BaseModel):
    items: list[TimelineOut]
    next_cursor: str | None

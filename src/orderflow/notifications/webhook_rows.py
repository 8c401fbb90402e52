"""Webhook rows as the stores return them: subscriptions, deliveries, attempts, due deliveries."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

SUBSCRIPTION_COLUMNS = (
    "id, url, customer_id, partner, event_types, description, enabled, disabled_reason, "
    "failure_streak, created_at, updated_at, secret, previous_secret, previous_secret_until"
)
Row = TypeVar("Row")

DELIVERY_COLUMNS = (
    "id, subscription_id, order_id, position, entry_id, event_type, status, attempts, "
    "next_attempt_at, last_error, created_at, delivered_at"
)


class SubscriptionFacts(BaseModel):
    """What a subscription's owner may see of it (no secrets)."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: uuid.UUID
    url: str
    customer_id: uuid.UUID | None
    partner: str | None
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    failure_streak: int
    created_at: datetime
    previous_secret_until: datetime | None = Field(
        description="until when the previous secret still signs (a rotation's overlap)"
    )


class SubscriptionRow(SubscriptionFacts):
    """A subscription as stored, with its secrets."""

    updated_at: datetime
    secret: str
    previous_secret: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: uuid.UUID
    subscription_id: uuid.UUID
    order_id: uuid.UUID
    position: int
    entry_id: int
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery claimed for an attempt, with what sending it needs."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    order_id: uuid.UUID
    url: str
    body: str
    attempts: int
    secrets: list[str]


def from_record(row_type: type[Row], record: asyncpg.Record) -> Row:
    """A row of ``row_type`` (a dataclass) from the record's columns of the same names."""
    return row_type(**{f.name: record[f.name] for f in dataclasses.fields(row_type)})  # type: ignore[arg-type]

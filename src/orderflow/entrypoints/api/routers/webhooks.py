"""Webhook subscriptions: register endpoints, rotate their secrets, see and redeliver what was
sent (docs/webhooks.md). Deliveries themselves are made by the workers, never here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from orderflow.domain.access import Role
from orderflow.domain.errors import Forbidden, InvalidRequest
from orderflow.domain.webhooks import Partner
from orderflow.entrypoints.api.deps import OrderActor, Pool
from orderflow.entrypoints.api.problems import EDGE_RESPONSES, ProblemRoute
from orderflow.notifications import webhook_subscriptions as webhooks
from orderflow.notifications.webhook_rows import AttemptRow, DeliveryRow, SubscriptionFacts

router = APIRouter(
    prefix="/api/v1/webhooks", tags=["webhooks"], responses=EDGE_RESPONSES, route_class=ProblemRoute
)


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"url": "https://example.com/hooks/orderflow", "event_types": ["order.shipped"]}
            ]
        },
    )
    url: AnyHttpUrl = Field(description="where deliveries are POSTed (http or https)")
    event_types: Annotated[list[str], Field(max_length=32)] = Field(
        default_factory=list,
        description="only these event types; empty: all (a partner: what its notifications name)",
    )
    description: Annotated[str, Field(max_length=200)] = ""
    partner: Partner | None = Field(
        default=None, description="admin only: a partner's subscription, for every order"
    )
    customer_id: uuid.UUID | None = Field(
        default=None, description="admin only: a subscription for this customer's orders"
    )


# A subscription as its owner sees it: the store's row, less its secrets. (No docstring: it
# would become the schema's description in the OpenAPI document.)
class SubscriptionOut(SubscriptionFacts):
    pass


class SubscriptionWithSecret(SubscriptionOut):
    secret: str = Field(description="whsec_...: verify deliveries with it (docs/webhooks.md)")


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_s: Annotated[float, Field(ge=0, le=7 * 86400)] = Field(
        default=86400, description="how long the old secret keeps signing too"
    )


DeliveryStatus = Literal["pending", "delivered", "refused"]


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(description="the webhook-id of every attempt")
    subscription_id: uuid.UUID
    order_id: uuid.UUID
    entry_id: int = Field(description="the timeline entry delivered")
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: DeliveryRow) -> DeliveryOut:
        shown = cls.model_validate(row)
        if row.status != "pending":
            shown.next_attempt_at = None  # a settled delivery is due never
        return shown


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str


class DeliveryDetail(DeliveryOut):
    attempts_made: list[AttemptOut]

    @classmethod
    def with_attempts(cls, row: DeliveryRow, attempts: list[AttemptRow]) -> DeliveryDetail:
        return cls(
            **DeliveryOut.of(row).model_dump(),
            attempts_made=[AttemptOut.model_validate(a) for a in attempts],
        )


@router.post(
    "/subscriptions",
    status_code=status.HTTP_201_CREATED,
    response_model=SubscriptionWithSecret,
    summary="Register a webhook endpoint",
    description="A customer key subscribes to its own orders. An admin key subscribes a "
    "partner (`partner`: warehouse, carrier, supplier, other) to every order, or a customer "
    "(`customer_id`) to theirs. The answer carries the signing secret.",
)
async def create_subscription(
    body: SubscriptionIn, pool: Pool, principal: OrderActor
) -> SubscriptionWithSecret:
    own = principal.owner
    if own is not None and (body.partner is not None or body.customer_id not in (None, own)):
        raise Forbidden("a customer key subscribes to its own orders only")
    if principal.role is Role.ADMIN and (body.partner is None) == (body.customer_id is None):
        raise InvalidRequest("an admin names either a partner or a customer_id")
    row = await webhooks.create_subscription(
        pool,
        url=str(body.url),
        event_types=body.event_types,
        description=body.description,
        customer_id=own or body.customer_id,
        partner=body.partner,
    )
    return SubscriptionWithSecret.model_validate(row)


@router.get("/subscriptions", response_model=list[SubscriptionOut], summary="List subscriptions")
async def list_subscriptions(pool: Pool, principal: OrderActor) -> list[SubscriptionOut]:
    rows = await webhooks.list_subscriptions(pool, owner=principal.owner)
    return [SubscriptionOut.model_validate(r) for r in rows]


@dataclass(frozen=True, slots=True)
class _Target:
    """The subscription a route acts on, as the caller asks for it (a customer reaches only
    its own: ``owner``)."""

    pool: asyncpg.Pool
    id: uuid.UUID
    owner: uuid.UUID | None


def _target(subscription_id: uuid.UUID, pool: Pool, principal: OrderActor) -> _Target:
    return _Target(pool, subscription_id, principal.owner)


Target = Annotated[_Target, Depends(_target)]


@router.get(
    "/subscriptions/{subscription_id}",
    response_model=SubscriptionWithSecret,
    summary="One subscription, with its secret",
)
async def get_subscription(sub: Target) -> SubscriptionWithSecret:
    row = await webhooks.get_subscription(sub.pool, sub.id, owner=sub.owner)
    return SubscriptionWithSecret.model_validate(row)


@router.post(
    "/subscriptions/{subscription_id}/rotate-secret",
    response_model=SubscriptionWithSecret,
    summary="Rotate the signing secret",
    description="Deliveries are signed with the new and the old secret (two signatures in "
    "`webhook-signature`) until the overlap ends.",
)
async def rotate_secret(sub: Target, body: RotateIn | None = None) -> SubscriptionWithSecret:
    overlap = (body or RotateIn()).overlap_s
    row = await webhooks.rotate_secret(sub.pool, sub.id, owner=sub.owner, overlap_s=overlap)
    return SubscriptionWithSecret.model_validate(row)


@router.post(
    "/subscriptions/{subscription_id}/enable",
    response_model=SubscriptionOut,
    summary="Re-enable a subscription that was disabled for failing",
)
async def enable_subscription(sub: Target) -> SubscriptionOut:
    row = await webhooks.enable(sub.pool, sub.id, owner=sub.owner)
    return SubscriptionOut.model_validate(row)


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a subscription and its deliveries",
)
async def delete_subscription(sub: Target) -> Response:
    await webhooks.delete(sub.pool, sub.id, owner=sub.owner)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/subscriptions/{subscription_id}/deliveries",
    response_model=list[DeliveryOut],
    summary="A subscription's deliveries, newest first",
)
async def list_deliveries(
    sub: Target,
    status_: Annotated[
        Literal["pending", "delivered", "refused"] | None, Query(alias="status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryOut]:
    rows = await webhooks.deliveries(sub.pool, sub.id, owner=sub.owner, status=status_, limit=limit)
    return [DeliveryOut.of(r) for r in rows]


@router.get(
    "/deliveries/{delivery_id}",
    response_model=DeliveryDetail,
    summary="One delivery with every attempt (status, latency, response excerpt)",
)
async def get_delivery(delivery_id: uuid.UUID, pool: Pool, principal: OrderActor) -> DeliveryDetail:
    return DeliveryDetail.with_attempts(
        *await webhooks.delivery(pool, delivery_id, owner=principal.owner)
    )


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryDetail,
    summary="Send a delivery again (same webhook-id)",
)
async def redeliver(delivery_id: uuid.UUID, pool: Pool, principal: OrderActor) -> DeliveryDetail:
    return DeliveryDetail.with_attempts(
        *await webhooks.redeliver(pool, delivery_id, owner=principal.owner)
    )

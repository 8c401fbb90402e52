"""Webhook subscriptions as their owners manage them: create, read, rotate the secret,
re-enable, delete; and the deliveries made for them, to read or send again (docs/webhooks.md)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from orderflow.domain import events as ev
from orderflow.domain import webhooks as signing
from orderflow.domain.errors import InvalidRequest, NotFound
from orderflow.domain.saga import RECIPIENTS
from orderflow.domain.webhooks import Partner
from orderflow.notifications import delivery_store
from orderflow.notifications import webhook_store as store
from orderflow.notifications.webhook_rows import AttemptRow, DeliveryRow, SubscriptionRow

EVENT_TYPES = frozenset(ev.EVENT_TYPES)


def partner_event_types(partner: Partner) -> list[str]:
    """What a partner hears about by default: what the notifications tell it."""
    return sorted(
        event
        for event, pairs in RECIPIENTS.items()
        if any(recipient == partner.value for recipient, _ in pairs)
    ) or sorted(RECIPIENTS)


def _check_types(event_types: Sequence[str]) -> list[str]:
    unknown = sorted(set(event_types) - EVENT_TYPES)
    if unknown:
        raise InvalidRequest(f"unknown event types {unknown}; see GET /api/v1/events/catalogue")
    return sorted(set(event_types))


async def create_subscription(
    pool: asyncpg.Pool,
    *,
    url: str,
    event_types: Sequence[str],
    description: str,
    customer_id: uuid.UUID | None,
    partner: Partner | None,
) -> SubscriptionRow:
    """A new subscription with a fresh secret: a customer's (its orders) or a partner's (every
    order). Without event types, a partner gets what its notifications name, a customer all."""
    if (customer_id is None) == (partner is None):
        raise InvalidRequest("a subscription is either a customer's or a partner's")
    types = _check_types(event_types)
    if not types and partner is not None:
        types = partner_event_types(partner)
    try:
        return await store.insert_subscription(
            pool,
            sub_id=uuid.uuid4(),
            url=url,
            customer_id=customer_id,
            partner=partner.value if partner else None,
            event_types=types,
            description=description,
            secret=signing.new_secret(),
        )
    except asyncpg.ForeignKeyViolationError:
        raise InvalidRequest(f"customer {customer_id} does not exist") from None


def _found(sub: SubscriptionRow | None, sub_id: uuid.UUID) -> SubscriptionRow:
    """``sub``, or NotFound if it is gone."""
    if sub is None:
        raise NotFound(f"webhook subscription {sub_id} does not exist")
    return sub


async def get_subscription(
    pool: asyncpg.Pool, sub_id: uuid.UUID, *, owner: uuid.UUID | None
) -> SubscriptionRow:
    """A subscription the caller may see (``owner``: a customer sees only its own)."""
    found = _found(await store.get_subscription(pool, sub_id), sub_id)
    if owner is not None and found.customer_id != owner:
        raise NotFound(f"webhook subscription {sub_id} does not exist")
    return found


async def list_subscriptions(
    pool: asyncpg.Pool, *, owner: uuid.UUID | None
) -> list[SubscriptionRow]:
    """The subscriptions the caller may see."""
    return await store.list_subscriptions(pool, customer_id=owner)


async def rotate_secret(
    pool: asyncpg.Pool, sub_id: uuid.UUID, *, owner: uuid.UUID | None, overlap_s: float
) -> SubscriptionRow:
    """A new secret; messages are signed with both for ``overlap_s`` seconds."""
    await get_subscription(pool, sub_id, owner=owner)
    rotated = await store.rotate_secret(
        pool, sub_id, secret=signing.new_secret(), overlap_s=overlap_s
    )
    return _found(rotated, sub_id)


async def enable(
    pool: asyncpg.Pool, sub_id: uuid.UUID, *, owner: uuid.UUID | None
) -> SubscriptionRow:
    """Re-enable a subscription (after it was disabled for failing)."""
    await get_subscription(pool, sub_id, owner=owner)
    return _found(await store.enable(pool, sub_id), sub_id)


async def delete(pool: asyncpg.Pool, sub_id: uuid.UUID, *, owner: uuid.UUID | None) -> None:
    """Delete a subscription and its deliveries."""
    await get_subscription(pool, sub_id, owner=owner)
    await store.delete_subscription(pool, sub_id)


async def deliveries(
    pool: asyncpg.Pool,
    sub_id: uuid.UUID,
    *,
    owner: uuid.UUID | None,
    status: str | None,
    limit: int,
) -> list[DeliveryRow]:
    """A subscription's deliveries, newest first."""
    await get_subscription(pool, sub_id, owner=owner)
    return await delivery_store.list_deliveries(pool, sub_id, status=status, limit=limit)


async def delivery(
    pool: asyncpg.Pool, delivery_id: uuid.UUID, *, owner: uuid.UUID | None
) -> tuple[DeliveryRow, list[AttemptRow]]:
    """One delivery with its attempts."""
    found = await delivery_store.get_delivery(pool, delivery_id)
    if found is None:
        raise NotFound(f"webhook delivery {delivery_id} does not exist")
    await get_subscription(pool, found[0].subscription_id, owner=owner)
    return found


async def redeliver(
    pool: asyncpg.Pool, delivery_id: uuid.UUID, *, owner: uuid.UUID | None
) -> tuple[DeliveryRow, list[AttemptRow]]:
    """Send a delivery again (same ``webhook-id``: receivers that saw it drop it)."""
    await delivery(pool, delivery_id, owner=owner)
    await delivery_store.redeliver(pool, delivery_id)
    return await delivery(pool, delivery_id, owner=owner)

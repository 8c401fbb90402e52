"""Webhook deliveries, made by the workers from the order feed (docs/webhooks.md, ADR 0024).

Customers subscribe to their own orders, admins subscribe partners (warehouse, carrier,
supplier) to every order; each subscription filters by event type and has its own secret.
Deliveries are made from the order feed by the workers, never from a request: the fan-in
turns each new feed entry into one delivery per matching subscription (durable, with the
body it will send), and the sender attempts them, signed per the Standard Webhooks
convention, retrying with growing delays until the receiver accepts. Per order, one endpoint
gets its deliveries in feed order (a later one waits while an earlier one is pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass

import asyncpg
import httpx
import orjson
import structlog

from orderflow.domain import webhooks as signing
from orderflow.domain.model import FeedEntry
from orderflow.domain.saga import RECIPIENTS
from orderflow.domain.webhooks import Partner
from orderflow.notifications import delivery_store as store
from orderflow.notifications import webhook_store
from orderflow.notifications.webhook_rows import Due, SubscriptionRow
from orderflow.notifications.webhook_subscriptions import create_subscription
from orderflow.observability import metrics
from orderflow.ordering import entry_json, read_feed_after, sequence_feed

log = structlog.get_logger(__name__)

LEGACY_DESCRIPTION = "ORDERFLOW_NOTIFICATION_WEBHOOK_URL"
# Statuses a receiver answers when it may accept the same message later.
_RETRYABLE = frozenset({408, 409, 425, 429})


async def adopt_notification_url(pool: asyncpg.Pool, url: str) -> SubscriptionRow:
    """The global notification URL as an ordinary subscription (made once, kept after)."""
    found = await webhook_store.find_by_url(pool, url=url, partner=Partner.OTHER.value)
    if found is not None:
        return found
    return await create_subscription(
        pool,
        url=url,
        event_types=sorted(RECIPIENTS),
        description=LEGACY_DESCRIPTION,
        customer_id=None,
        partner=Partner.OTHER,
    )


def message_body(entry: FeedEntry) -> bytes:
    """What a delivery sends: the Standard Webhooks payload shape around the feed entry."""
    return orjson.dumps(
        {"type": entry.event, "timestamp": entry.at.isoformat(), "data": entry_json(entry)}
    )


def _matches(sub: asyncpg.Record, entry: FeedEntry) -> bool:
    return (sub["customer_id"] is None or sub["customer_id"] == entry.customer_id) and (
        not sub["event_types"] or entry.event in sub["event_types"]
    )


async def fan_in(pool: asyncpg.Pool, *, limit: int = 500) -> int:
    """Turn feed entries after the cursor into deliveries; how many entries were read
    (0 when another worker is at it or nothing is new)."""
    async with pool.acquire() as conn, conn.transaction():
        cursor = await store.claim_cursor(conn)
        if cursor is None:
            return 0
        entries, seen = await read_feed_after(conn, cursor, limit=limit)
        if not entries and seen == cursor:
            return 0
        subs = await store.subscriptions_for_fan_in(conn)
        rows = [
            (uuid.uuid4(), s["id"], e.order_id, e.position, e.id, e.event, message_body(e).decode())
            for e in entries
            for s in subs
            if _matches(s, e)
        ]
        await store.add_deliveries(conn, rows, cursor=seen)
    return len(entries)


@dataclass(frozen=True, slots=True)
class Policy:
    """How deliveries are attempted."""

    timeout_s: float = 5.0
    retry_base_s: float = 1.0
    retry_max_s: float = 3600.0
    disable_after: int = 20
    batch: int = 32

    def retry_in(self, attempts: int) -> float:
        """The wait before attempt ``attempts + 1``."""
        return float(min(self.retry_max_s, self.retry_base_s * 2 ** max(0, attempts - 1)))


async def attempt(http: httpx.AsyncClient, due: Due, policy: Policy, pool: asyncpg.Pool) -> str:
    """Send one delivery and record the attempt; its outcome."""
    body = due.body.encode()
    headers = {
        "content-type": "application/json",
        **signing.headers(due.secrets, str(due.id), int(time.time()), body),
    }
    started = time.monotonic()
    status_code: int | None = None
    error: str | None = None
    excerpt = ""
    try:
        response = await http.post(due.url, content=body, headers=headers, timeout=policy.timeout_s)
        status_code = response.status_code
        excerpt = response.text[:500]
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    latency_ms = round((time.monotonic() - started) * 1000)
    if status_code is not None and 200 <= status_code < 300:
        outcome = "delivered"
    elif status_code is None or status_code >= 500 or status_code in _RETRYABLE:
        outcome = "pending"
        error = error or f"answered {status_code}"
    else:
        outcome = "refused"
        error = f"refused: {status_code}"
    enabled = await store.record_attempt(
        pool,
        due.id,
        status_code=status_code,
        latency_ms=latency_ms,
        error=error,
        excerpt=excerpt,
        outcome=outcome,
        retry_in_s=policy.retry_in(due.attempts),
        disable_after=policy.disable_after,
    )
    metrics.WEBHOOK_ATTEMPTS.labels(outcome).inc()
    log.info(
        "webhook_attempt",
        delivery_id=str(due.id),
        subscription_id=str(due.subscription_id),
        order_id=str(due.order_id),
        attempt=due.attempts,
        status=status_code,
        outcome=outcome,
        latency_ms=latency_ms,
    )
    if not enabled:
        log.warning("webhook_subscription_disabled", subscription_id=str(due.subscription_id))
    return outcome


async def deliver_due(pool: asyncpg.Pool, http: httpx.AsyncClient, policy: Policy) -> int:
    """Attempt every delivery that is due now (a batch at a time); how many were attempted."""
    due = await store.claim_due(pool, limit=policy.batch, lease_s=policy.timeout_s + 5)
    if due:
        await asyncio.gather(*(attempt(http, d, policy, pool) for d in due))
    return len(due)


async def run_deliveries(
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    policy: Policy,
    stop: asyncio.Event,
    *,
    wake: asyncio.Event,
    poll_interval_s: float,
) -> None:
    """The workers' webhook duty, until ``stop``: number the feed, make deliveries of what is
    new, attempt what is due; again on ``wake`` (events were committed) or every
    ``poll_interval_s``."""
    while not stop.is_set():
        try:
            await sequence_feed(pool)
            while await fan_in(pool):
                pass
            while await deliver_due(pool, http, policy) == policy.batch:
                pass
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("webhook_duty_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(poll_interval_s):
                await first_set(stop, wake)
        wake.clear()


async def first_set(*events: asyncio.Event) -> None:
    """Return when any of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()

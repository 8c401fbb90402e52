"""Notifications through the webhook sender, against a real HTTP receiver on a local port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orderflow.adapters.notifications import LogSender, WebhookSender
from orderflow.domain.events import Envelope, OrderShipped
from orderflow.service import notifications
from orderflow.service.bootstrap import notification_sender
from orderflow.service.consumer import Outcome, apply
from orderflow.service.ports import Notification
from orderflow.service.registry import Delivery, HandlerSpec, PermanentError, TransientError
from orderflow.settings import Settings
from tests.factories import make_customer, make_product, place_order
from tests.http_server import serving
from tests.pump import deliver


class Receiver:
    """Answers each POST with the next scripted status (200 once the script is used up)."""

    def __init__(self, *statuses: int) -> None:
        self.script = list(statuses)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def hook(self, request: Request) -> Response:
        self.calls.append((request.headers.get("idempotency-key", ""), await request.json()))
        return Response(status_code=self.script.pop(0) if self.script else 200)


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    async with serving(app) as base:
        yield f"{base}/hook"


@asynccontextmanager
async def webhook_handler(receiver: Receiver) -> AsyncIterator[HandlerSpec]:
    async with receiving(receiver) as url, httpx.AsyncClient(timeout=2) as http:
        [spec] = notifications.handlers(WebhookSender(http, url))
        yield spec


async def _shipped(client: httpx.AsyncClient) -> Envelope:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    return Envelope.wrap(
        OrderShipped(carrier="SimCarrier", tracking_number="TRK1"), order_id=uuid.UUID(order["id"])
    )


async def _recorded(pool: asyncpg.Pool, envelope: Envelope) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT recipient, channel FROM notifications WHERE event_id = $1", envelope.event_id
    )
    return [(r["recipient"], r["channel"]) for r in rows]


async def test_a_failing_webhook_is_retried_and_the_notification_recorded_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    receiver = Receiver(503, 503)
    envelope = await _shipped(client)
    async with webhook_handler(receiver) as spec:
        assert spec.prepare is not None  # sent before the transaction opens
        assert not spec.batch
        assert await deliver(pool, spec, envelope) == Outcome.APPLIED
        # A redelivery of the same event is recognised before anything is sent again ...
        again = Delivery(envelope=envelope, event=envelope.event(), redelivered=True)
        assert await apply(pool, spec, again) == Outcome.DUPLICATE
        assert len(receiver.calls) == 3
        # ... a first delivery is not looked up: a copy (a relay republishing) is sent again,
        # with the same key for the receiver to drop, and recorded once all the same.
        copy = Delivery(envelope=envelope, event=envelope.event())
        assert await apply(pool, spec, copy) == Outcome.DUPLICATE
    key = f"{envelope.event_id}:customer"
    assert [k for k, _ in receiver.calls] == [key, key, key, key]
    assert receiver.calls[-1][1] == {
        "event_id": str(envelope.event_id),
        "order_id": str(envelope.order_id),
        "recipient": "customer",
        "subject": "Your order has shipped",
    }
    assert await _recorded(pool, envelope) == [("customer", "webhook")]


async def test_a_webhook_refusing_the_notification_is_a_permanent_failure(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    envelope = await _shipped(client)
    async with webhook_handler(Receiver(422)) as spec:
        with pytest.raises(PermanentError):
            await apply(pool, spec, Delivery(envelope=envelope, event=envelope.event()))
    assert await _recorded(pool, envelope) == []  # goes to the dead letters, not the record


async def test_the_worker_sends_to_the_webhook_only_when_one_is_configured(
    settings: Settings,
) -> None:
    assert isinstance(notification_sender(settings, None), LogSender)
    configured = settings.model_copy(
        update={"notification_webhook_url": SecretStr("http://127.0.0.1:9/hook")}
    )
    async with httpx.AsyncClient() as http:
        sender = notification_sender(configured, http)
        assert isinstance(sender, WebhookSender)
        assert sender.local is False
        # Nobody listens on port 9: a retryable failure, not a crash or a silent success.
        with pytest.raises(TransientError):
            await sender.send(
                Notification(
                    order_id=None, event_id=uuid.uuid4(), recipient="customer", subject="s"
                )
            )

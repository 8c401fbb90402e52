"""Traces through the whole path: the HTTP request, the outbox, the broker's headers and every
handler of the saga share one trace, recorded by an in-memory exporter (a real API, relay,
worker, PostgreSQL and RabbitMQ in this process)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from orderflow.domain.access import Role
from orderflow.entrypoints.api.app import create_app
from orderflow.entrypoints.bootstrap import Deps, build_registry
from orderflow.observability.tracing import configure_tracing, stop_tracing, tracing_enabled
from orderflow.settings import Settings
from tests.factories import make_customer, make_product, place_order
from tests.integration.backbone.helpers import running as running_backbone
from tests.integration.conftest import bearer
from tests.integration.conftest import running as running_api


@pytest.fixture
async def spans() -> AsyncIterator[InMemorySpanExporter]:
    """Tracing installed for this test only, into memory."""
    exporter = InMemorySpanExporter()
    configure_tracing(Settings(), process="test", exporter=exporter)
    yield exporter
    stop_tracing()


async def _delivered(client: httpx.AsyncClient, order_id: str) -> None:
    async with asyncio.timeout(30):
        while (await client.get(f"/api/v1/orders/{order_id}")).json()["status"] != "delivered":
            await asyncio.sleep(0.1)


async def test_a_request_and_every_handler_of_its_order_share_one_trace(
    bb_settings: Settings, pool: asyncpg.Pool, spans: InMemorySpanExporter
) -> None:
    settings = bb_settings.model_copy(update={"autopilot": True, "autopilot_delay_s": 0.0})
    registry = build_registry(Deps(settings=settings, pool=pool))
    async with running_api(create_app(settings)) as transport:
        key = await bearer(pool, Role.ADMIN)
        async with (
            httpx.AsyncClient(
                transport=transport,
                base_url="http://test",
                headers={"Authorization": f"Bearer {key}"},
            ) as client,
            running_backbone(settings, pool, registry),
        ):
            product = await make_product(client, stock=5)
            customer = await make_customer(client)
            order = await place_order(
                client, customer_id=customer["id"], lines=[(product["id"], 1)]
            )
            await _delivered(client, order["id"])
            await asyncio.sleep(0.5)  # the last notifications' spans end after the status moved

    finished = spans.get_finished_spans()
    [request] = [
        s
        for s in finished
        if s.kind is SpanKind.SERVER
        and s.name == "POST /api/v1/orders"
        and s.attributes is not None
        and s.attributes.get("http.response.status_code") == 201
    ]
    trace_id = request.context.trace_id
    correlation = await pool.fetchval(
        "SELECT envelope->>'correlation_id' FROM outbox "
        "WHERE order_id = $1 AND event_type = 'order.created'",
        uuid.UUID(order["id"]),
    )
    assert uuid.UUID(correlation).int == trace_id, "the order's conversation is the request's trace"

    handled = [
        s
        for s in finished
        if s.kind is SpanKind.CONSUMER
        and s.attributes is not None
        and s.attributes.get("orderflow.order.id") == order["id"]
    ]
    assert {s.context.trace_id for s in handled} == {trace_id}
    assert {str(s.attributes["orderflow.handler"]) for s in handled if s.attributes} >= {
        "payments.initiate",
        "payments.charge",
        "orders.mark_paid",
        "inventory.reserve",
        "autopilot.warehouse",
        "autopilot.carrier",
        "notifications.send",
    }
    for span in handled:
        assert span.attributes is not None
        assert span.parent is not None
        event_id = uuid.UUID(str(span.attributes["messaging.message.id"]))
        assert span.parent.span_id == int(event_id.hex[:16], 16), "the event is the parent"


async def test_without_an_exporter_nothing_is_installed_and_nothing_is_recorded(
    settings: Settings,
) -> None:
    assert configure_tracing(settings, process="test") is None
    assert settings.otlp_endpoint is None
    assert not tracing_enabled()

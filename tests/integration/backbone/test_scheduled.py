"""Retries and deferrals scheduled in PostgreSQL (ADR 0028): the worker stores a row and acks,
the relay's scheduled pump publishes it to the work queue once due, never before; a worker that
cannot store the row keeps the message and hands it back, never losing or acking it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import orjson
import pytest
import structlog.testing
from prometheus_client import REGISTRY

from orderflow.domain.events import Envelope, OrderDelivered
from orderflow.kernel.scheduled_pump import ScheduledPump
from orderflow.kernel.topology import ATTEMPT, FIRST_FAILED, Names
from orderflow.settings import Settings
from tests.backbone_app import EVENT, make_registry
from tests.integration.backbone.helpers import (
    all_applied_once,
    applied_counts,
    emit,
    eventually,
    queue_depth,
    running,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def _publish(settings: Settings, queue: str, carrier: str) -> uuid.UUID:
    """Put one ``order.delivered`` straight on ``queue``, as the relay would; its event id."""
    envelope = Envelope.wrap(OrderDelivered(carrier=carrier), order_id=uuid.uuid4())
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                envelope.model_dump_json().encode(),
                message_id=str(envelope.event_id),
                type=EVENT,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={ATTEMPT: 1, "traceparent": TRACEPARENT},
            ),
            queue,
            mandatory=True,
        )
    return envelope.event_id


async def _row(pool: asyncpg.Pool, event_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT queue, reason, message_id, event_type, headers::text AS headers, due_at, "
        "extract(epoch FROM due_at - created_at) AS delay_s "
        "FROM scheduled_deliveries WHERE message_id = $1",
        str(event_id),
    )


@contextlib.asynccontextmanager
async def _pumping(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(ScheduledPump(settings, pool).run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _published(reason: str) -> float:
    value = REGISTRY.get_sample_value("orderflow_scheduled_published_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize(
    ("carrier", "reason", "delay_s", "attempt"),
    [("flaky:1", "retry", 1.5, 2), ("defer:800", "defer", 0.8, 1)],
    ids=["transient-error", "defer"],
)
async def test_a_delivery_not_applied_yet_is_scheduled_acked_and_published_when_due(
    bb_settings: Settings,
    pool: asyncpg.Pool,
    carrier: str,
    reason: str,
    delay_s: float,
    attempt: int,
) -> None:
    settings = bb_settings.model_copy(update={"retry_base_delay_ms": 1500})
    work = Names.from_settings(settings).handler("alpha").work
    registry = make_registry(["alpha"])
    # No relay: the row waits in PostgreSQL, and the message is gone from the broker.
    async with running(settings, pool, registry, relays=0):
        event_id = await _publish(settings, work, carrier)

        async def scheduled() -> bool:
            return await _row(pool, event_id) is not None

        await eventually(scheduled)
    row = await _row(pool, event_id)
    assert row is not None
    assert (row["queue"], row["reason"], row["event_type"]) == (work, reason, EVENT)
    assert delay_s - 0.1 <= row["delay_s"] <= delay_s + 0.5
    headers = orjson.loads(row["headers"])
    assert headers[ATTEMPT] == attempt
    assert headers["traceparent"] == TRACEPARENT
    assert (FIRST_FAILED in headers) is (reason == "retry")
    # Acked, not merely held: the worker is gone and nothing came back to the queue.
    assert await queue_depth(settings, work) == 0

    before = _published(reason)
    async with running(settings, pool, registry, relays=0), _pumping(settings, pool):
        await eventually(lambda: all_applied_once(pool, "alpha", [event_id]))
    applied = await pool.fetchrow(
        "SELECT attempt, at FROM backbone_applied WHERE event_id = $1", event_id
    )
    assert applied["attempt"] == attempt
    assert applied["at"] >= row["due_at"], "published before it was due"
    assert await _row(pool, event_id) is None  # deleted once the broker confirmed it
    assert _published(reason) == before + 1


def _closed_port_dsn(dsn: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_a_retry_that_cannot_be_stored_is_neither_acked_nor_lost(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    settings = bb_settings.model_copy(update={"scheduling_hold_s": 0.3, "retry_base_delay_ms": 100})
    names = Names.from_settings(settings)
    work = names.handler("alpha").work
    requeued_before = _requeued()
    # PostgreSQL unreachable for the settler alone: a pool on a port nobody listens on.
    unreachable = await asyncpg.create_pool(_closed_port_dsn(settings.dsn()), min_size=0)
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(settings, pool, make_registry(["alpha"]), relays=0) as workers:
                workers[0].settler.pool = unreachable
                event_id = await _publish(settings, work, "flaky:1")

                async def handed_back_and_delivered_again() -> bool:
                    # The same attempt failing a second time: it came back from the queue.
                    retried = [e for e in logs if e["event"] == "delivery_retrying"]
                    return len(retried) >= 2 and _requeued() >= requeued_before + 1

                await eventually(handed_back_and_delivered_again)
                failed = [e for e in logs if e["event"] == "delivery_scheduling_failed"]
                assert len(failed) >= 2  # tried again while holding it
                assert await _row(pool, event_id) is None
                assert await applied_counts(pool, "alpha") == {}
                assert await queue_depth(settings, names.dead_letters) == 0
                # PostgreSQL is back: the next failure is scheduled, published and applied.
                workers[0].settler.pool = pool
                async with _pumping(settings, pool):
                    await eventually(lambda: all_applied_once(pool, "alpha", [event_id]))
    finally:
        await unreachable.close()
    attempt = await pool.fetchval(
        "SELECT attempt FROM backbone_applied WHERE event_id = $1", event_id
    )
    assert attempt == 2  # the hand-backs did not count as attempts
    assert await queue_depth(settings, names.dead_letters) == 0


def _requeued() -> float:
    labels = {"handler": "alpha", "outcome": "requeued"}
    return REGISTRY.get_sample_value("orderflow_events_consumed_total", labels) or 0.0


async def test_a_delivery_due_before_the_next_poll_wakes_the_relay(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    # Polls far apart: only the wake-up the worker sends after scheduling makes this fast.
    settings = bb_settings.model_copy(update={"scheduled_poll_interval_s": 30.0})
    async with running(settings, pool, make_registry(["alpha"])):
        await asyncio.sleep(1.0)  # the relay's first look at the table is behind it
        started = time.monotonic()
        [event_id] = await emit(pool, ["defer:0"])
        await eventually(lambda: all_applied_once(pool, "alpha", [event_id]), timeout=5)
    assert time.monotonic() - started < 5
    deferred = await pool.fetchval(
        "SELECT attempt FROM backbone_applied WHERE event_id = $1", event_id
    )
    assert deferred == 1

"""Fixtures for the event-backbone tests: each test gets its own exchange and queue names
(under the run's), fast retry and reconnect timings, and its broker objects deleted after."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest

from orderflow.kernel.topology import Names, delete_topology
from orderflow.settings import Settings
from tests.backbone_app import APPLIED_TABLE
from tests.conftest import require_service
from tests.integration.backbone.broker import rabbitmqctl

_serial = itertools.count(1)
TEST_HANDLERS = ("alpha", "beta", "gamma", "slow", "dead")


@pytest.fixture(scope="session", autouse=True)
async def _delete_run_queues(settings: Settings) -> AsyncIterator[None]:
    """At the end, delete every queue and exchange named for this run, including those that
    ``orderflow up`` declared for the saga's handlers (their names are not known here)."""
    yield
    try:
        queues = await _listed("list_queues", settings.queue_prefix)
        exchanges = await _listed("list_exchanges", settings.exchange)
    except AssertionError as exc:  # best effort: a wedged CLI must not hang the run
        warnings.warn(f"broker clean-up skipped: {exc}", stacklevel=1)
        return
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)


async def _listed(what: str, prefix: str) -> list[str]:
    out = await rabbitmqctl(what, "name", "--silent", timeout=30)
    return [n for n in out.split() if n == prefix or n.startswith(f"{prefix}.")]


@pytest.fixture
async def bb_settings(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Settings]:
    """This test's settings; stale outbox rows of other tests are marked published first, and
    the deliveries still scheduled for its queues deleted after."""
    require_service("RabbitMQ", settings.rabbitmq_url.get_secret_value(), 5672)
    n = next(_serial)
    mine = settings.model_copy(
        update={
            "exchange": f"{settings.exchange}.{n}",
            "queue_prefix": f"{settings.queue_prefix}.{n}",
            "retry_base_delay_ms": 100,
            "retry_max_attempts": 4,
            "relay_poll_interval_s": 0.5,
            "reconnect_max_backoff_s": 0.5,
            "worker_shutdown_timeout_s": 5.0,
        }
    )
    await pool.execute(APPLIED_TABLE)
    await pool.execute("TRUNCATE backbone_applied")
    await pool.execute("UPDATE outbox SET published_at = now() WHERE published_at IS NULL")
    yield mine
    # Retries still scheduled for this test's queues would wait for ever: no relay serves them.
    await pool.execute(
        "DELETE FROM scheduled_deliveries WHERE starts_with(queue, $1)", f"{mine.queue_prefix}."
    )
    connection = await aio_pika.connect(mine.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel()
        await delete_topology(channel, Names.from_settings(mine), TEST_HANDLERS)

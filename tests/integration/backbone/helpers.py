"""Helpers for the event-backbone tests: per-test names, running relays and workers, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import asyncpg

from orderflow.domain.events import Envelope, OrderDelivered
from orderflow.entrypoints.worker import Worker
from orderflow.kernel.handlers import Registry
from orderflow.kernel.relay import Relay
from orderflow.kernel.topology import Names
from orderflow.kernel.uow import unit_of_work
from orderflow.settings import Settings
from tests.conftest import child_env

REPO = Path(__file__).resolve().parents[3]


async def emit(pool: asyncpg.Pool, carriers: list[str]) -> list[uuid.UUID]:
    """Commit one ``order.delivered`` outbox row per carrier behaviour; their event ids."""
    async with unit_of_work(pool) as uow:
        envelopes = [
            Envelope.wrap(OrderDelivered(carrier=c), order_id=uuid.uuid4()) for c in carriers
        ]
        for envelope in envelopes:
            uow.emit(envelope)
    return [e.event_id for e in envelopes]


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, every: float = 0.05
) -> None:
    """Wait until ``check()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check.__name__}")
        await asyncio.sleep(every)


async def applied_counts(pool: asyncpg.Pool, handler: str) -> dict[uuid.UUID, int]:
    rows = await pool.fetch(
        "SELECT event_id, count(*) AS n FROM backbone_applied WHERE handler = $1 GROUP BY 1",
        handler,
    )
    return {r["event_id"]: r["n"] for r in rows}


async def all_applied_once(pool: asyncpg.Pool, handler: str, ids: list[uuid.UUID]) -> bool:
    counts = await applied_counts(pool, handler)
    assert all(counts.get(i, 0) <= 1 for i in ids), "an event was applied twice"
    return all(counts.get(i) == 1 for i in ids)


async def all_published(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> bool:
    """Whether every one of these outbox rows is marked published (committed)."""
    n = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_id = ANY($1) AND published_at IS NULL", ids
    )
    return bool(n == 0)


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    pool: asyncpg.Pool,
    registry: Registry,
    *,
    workers: int = 1,
    relays: int = 1,
) -> AsyncIterator[list[Worker]]:
    """Workers (connected before this yields) and relays as tasks of this event loop."""
    stop = asyncio.Event()
    pool_workers = [Worker(settings, registry, pool) for _ in range(workers)]
    tasks = [asyncio.create_task(w.run(stop)) for w in pool_workers]
    for w in pool_workers:
        await asyncio.wait_for(w.connected.wait(), 15)
    tasks += [asyncio.create_task(Relay(settings, pool).run(stop)) for _ in range(relays)]
    try:
        yield pool_workers
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process the same settings as this test."""
    env = child_env(settings)
    env.update(extra)
    return env


def spawn(settings: Settings, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """``python -m tests.backbone_app ARGS`` with this test's settings."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.backbone_app", *args],
        cwd=REPO,
        env=process_env(settings, **env),
    )


async def queue_counts(settings: Settings, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``, from a passive declare."""
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)


async def queue_depth(settings: Settings, queue: str) -> int:
    """Ready messages in ``queue``."""
    return (await queue_counts(settings, queue))[0]


def names(settings: Settings) -> Names:
    return Names.from_settings(settings)

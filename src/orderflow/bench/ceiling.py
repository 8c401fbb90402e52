"""The ceilings: what the platform itself does on this machine, without our code in the way.

(a) HTTP: the ceiling app's minimal insert endpoint under the same uvicorn and pool settings,
driven by the same load generator as ``place`` (and that generator's own ceiling on a no-op);
(b) RabbitMQ: persistent publishes with publisher confirms to a quorum queue, consumed with
manual acks; (c) PostgreSQL: commits per second of a two-row transaction.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import aio_pika
import asyncpg
import orjson

from orderflow.bench.cpu import CpuSampler
from orderflow.bench.http import build_request
from orderflow.bench.loadgen import LoadResult, LoadSpec, run_load
from orderflow.bench.runner import BenchRun
from orderflow.bench.servers import free_port, orderflow_command, start_server
from orderflow.bench.stats import latency_ms
from orderflow.kernel.database import create_pool
from orderflow.settings import Settings

PG_TABLE = """
CREATE TABLE IF NOT EXISTS bench_commits (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch      uuid NOT NULL,
    n          smallint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass
class Throughput:
    """Operations per second and their latency."""

    per_s: float
    latency_ms: dict[str, float]
    count: int
    window: tuple[float, float]  # wall clock at the start and the end of the measured time

    def as_dict(self) -> dict[str, Any]:
        return {"per_s": round(self.per_s, 1), "latency_ms": self.latency_ms, "count": self.count}


async def pg_commits(settings: Settings, *, duration_s: float, concurrency: int) -> Throughput:
    """Commits per second of a transaction inserting two rows, ``concurrency`` at a time."""
    pool = await create_pool(settings, min_size=concurrency, max_size=concurrency)
    latencies: list[float] = []
    try:
        await pool.execute(PG_TABLE)
        end = time.monotonic() + duration_s

        async def committer() -> None:
            async with pool.acquire() as conn:
                while time.monotonic() < end:
                    start = time.perf_counter()
                    batch = uuid.uuid4()
                    async with conn.transaction():
                        await conn.execute(
                            "INSERT INTO bench_commits (batch, n) VALUES ($1, 1)", batch
                        )
                        await conn.execute(
                            "INSERT INTO bench_commits (batch, n) VALUES ($1, 2)", batch
                        )
                    latencies.append(time.perf_counter() - start)

        began, wall = time.monotonic(), time.time()
        await asyncio.gather(*(committer() for _ in range(concurrency)))
        elapsed = time.monotonic() - began
    finally:
        await pool.close()
    return Throughput(
        len(latencies) / elapsed, latency_ms(latencies), len(latencies), (wall, wall + elapsed)
    )


async def rabbit_round_trips(
    settings: Settings, *, duration_s: float, in_flight: int, queue_name: str, copies: int = 1
) -> Throughput:
    """Messages per second through quorum queues: confirmed persistent publish to a fanout
    exchange bound to ``copies`` queues, each copy consumed and acked.

    Up to ``in_flight`` messages are outstanding (published, not yet consumed by every queue)
    at a time; the latency of each is from its publish to the ack of its last copy.
    """
    url = settings.rabbitmq_url.get_secret_value()
    publisher = await aio_pika.connect_robust(url, timeout=10)
    consumer = await aio_pika.connect_robust(url, timeout=10)
    latencies: list[float] = []
    window = asyncio.Semaphore(in_flight)
    seen: dict[int, int] = {}  # message number -> copies acked
    published = 0
    try:
        pub_channel = await publisher.channel(publisher_confirms=True)
        sub_channel = await consumer.channel()
        await sub_channel.set_qos(prefetch_count=in_flight * copies)
        exchange = await sub_channel.declare_exchange(
            queue_name, aio_pika.ExchangeType.FANOUT, durable=True
        )
        queues = []
        for i in range(copies):
            queue = await sub_channel.declare_queue(
                f"{queue_name}.{i}", durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.bind(exchange)
            queues.append(queue)
        target = await pub_channel.get_exchange(queue_name)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            body = orjson.loads(message.body)
            await message.ack()
            seen[body["n"]] = seen.get(body["n"], 0) + 1
            if seen[body["n"]] == copies:
                del seen[body["n"]]
                latencies.append(time.perf_counter() - body["t"])
                window.release()

        tags = [(queue, await queue.consume(on_message)) for queue in queues]
        end = time.monotonic() + duration_s
        began, wall = time.monotonic(), time.time()

        async def publish_loop() -> None:
            nonlocal published
            while time.monotonic() < end:
                await window.acquire()
                published += 1
                body = orjson.dumps({"t": time.perf_counter(), "n": published, "pad": "x" * 200})
                await target.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="",
                )

        # Several publishers, each awaiting its confirm: confirms overlap as in the relay.
        await asyncio.gather(*(publish_loop() for _ in range(min(in_flight, 16))))
        for _ in range(100):  # let the last ones arrive
            if len(latencies) >= published:
                break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - began
        for queue, tag in tags:
            await queue.cancel(tag)
            await sub_channel.queue_delete(queue.name)
        await sub_channel.exchange_delete(queue_name)
    finally:
        await publisher.close()
        await consumer.close()
    return Throughput(
        len(latencies) / elapsed, latency_ms(latencies), len(latencies), (wall, wall + elapsed)
    )


async def create_ceiling_table(pool: asyncpg.Pool) -> None:
    """The table the ceiling app inserts into."""
    from orderflow.bench.ceiling_app import CREATE_TABLE

    await pool.execute(CREATE_TABLE)


async def run_ceiling(
    run: BenchRun, *, concurrency: int, duration_s: float, warmup_s: float = 2.0
) -> dict[str, Any]:
    """All three ceilings and the load generator's own, in one run's settings, each with the
    machine's CPU per operation."""
    assert run.pool is not None
    async with CpuSampler() as cpu:
        figures = await _ceilings(run, cpu, concurrency, duration_s, warmup_s)
    return {
        **figures,
        "params": {
            "concurrency": concurrency,
            "duration_s": duration_s,
            "server_workers": run.server_workers,
            "loadgen_processes": run.loadgen_processes,
            "mq_in_flight": 64,
            "pg_connections": min(concurrency, 32),
        },
    }


async def _ceilings(
    run: BenchRun, cpu: CpuSampler, concurrency: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    assert run.pool is not None
    await create_ceiling_table(run.pool)
    port = free_port()
    server = await start_server(
        "ceiling-app",
        orderflow_command(
            "bench", "serve-ceiling", "--port", str(port), "--workers", str(run.server_workers)
        ),
        port=port,
        env=run.env(),
        log_dir=run.log_dir,
    )
    try:
        noop = LoadSpec(
            host="127.0.0.1",
            port=port,
            requests=[build_request("GET", "127.0.0.1", port, "/noop")],
            duration_s=duration_s,
            warmup_s=warmup_s,
            concurrency=concurrency,
            processes=run.loadgen_processes,
        )
        with run.progress("loadgen ceiling (GET /noop)", warmup_s + duration_s) as line:
            noop_result = await run_load(noop, line.update)
        bodies = [orjson.dumps({"name": f"item-{i}", "quantity": 1 + i % 7}) for i in range(100)]
        insert = replace(
            noop,
            requests=[
                build_request("POST", "127.0.0.1", port, "/ceiling/insert", b) for b in bodies
            ],
        )
        with run.progress("ceiling (a): minimal insert", warmup_s + duration_s) as line:
            insert_result = await run_load(insert, line.update)
    finally:
        await server.stop()
    with run.progress("ceiling (b): RabbitMQ round trips", duration_s):
        mq = await _rabbit(run, duration_s, cpu, copies=1)
    with run.progress("ceiling (b2): RabbitMQ, two copies each", duration_s):
        mq2 = await _rabbit(run, duration_s, cpu, copies=2)
    with run.progress("ceiling (c): PostgreSQL commits", duration_s):
        pg = await pg_commits(run.settings, duration_s=duration_s, concurrency=min(concurrency, 32))
    return {
        "loadgen_noop": _http(noop_result, warmup_s, cpu),
        "http_insert": _http(insert_result, warmup_s, cpu),
        "mq_round_trips": mq,
        "mq_two_copies": mq2,
        "pg_commits": _throughput(pg, cpu),
    }


async def _rabbit(run: BenchRun, duration_s: float, cpu: CpuSampler, copies: int) -> dict[str, Any]:
    try:
        return _throughput(await _rabbit_once_more(run, duration_s, copies), cpu)
    except (aio_pika.exceptions.AMQPError, TimeoutError) as exc:
        return {"per_s": None, "error": f"broker unavailable: {exc!r}"}


async def _rabbit_once_more(run: BenchRun, duration_s: float, copies: int) -> Throughput:
    queue_name = f"{run.settings.queue_prefix}.ceiling"
    try:
        return await rabbit_round_trips(
            run.settings, duration_s=duration_s, in_flight=64, queue_name=queue_name, copies=copies
        )
    except (aio_pika.exceptions.AMQPConnectionError, TimeoutError):
        # The broker is shared; a restart by someone else's test is not our figure. Once more.
        await asyncio.sleep(5)
        return await rabbit_round_trips(
            run.settings, duration_s=duration_s, in_flight=64, queue_name=queue_name, copies=copies
        )


def _http(result: LoadResult, warmup_s: float, cpu: CpuSampler) -> dict[str, Any]:
    start = result.started_at + warmup_s
    return {
        "per_s": round(result.per_s, 1),
        "latency_ms": latency_ms(result.latencies_s),
        "errors": result.errors(),
        "cpu_ms_each": cpu.ms_each(start, start + result.duration_s, result.per_s),
    }


def _throughput(result: Throughput, cpu: CpuSampler) -> dict[str, Any]:
    return {**result.as_dict(), "cpu_ms_each": cpu.ms_each(*result.window, result.per_s)}

"""Queue depths during a bench run: the ready messages of every work queue and the outbox
backlog, sampled once a second."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aio_pika
import asyncpg

from orderflow.bench.runner import BenchRun


class QueueSampler:
    """Samples, once a second, the ready messages of every work queue and the outbox backlog
    (rows not yet published). A backlog held as unacknowledged deliveries inside the
    consumers' prefetch windows shows in neither: the end-to-end latency shows it."""

    def __init__(self, run: BenchRun, queues: dict[str, str]) -> None:
        self.run = run
        self.queues = queues  # handler name -> its work queue
        # (wall time, ready messages of each handler's work queue that had any, unpublished
        # outbox rows)
        self.samples: list[tuple[float, dict[str, int], int]] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> QueueSampler:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_: object) -> None:
        # Stopped by an event, not by cancelling it: aio-pika may turn a cancellation in the
        # middle of opening a channel into a channel error, which the loop suppresses, and the
        # run then waited for the sampler for ever.
        self._stop.set()
        if self._task is None:
            return
        try:
            async with asyncio.timeout(15):
                await self._task
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        url = self.run.settings.rabbitmq_url.get_secret_value()
        connection = await aio_pika.connect_robust(url, timeout=10)
        channel: aio_pika.abc.AbstractChannel | None = None
        try:
            while not self._stop.is_set():
                ready: dict[str, int] = {}
                for handler, name in self.queues.items():
                    try:
                        if channel is None or channel.is_closed:
                            channel = await connection.channel()
                        queue = await channel.declare_queue(name, passive=True)
                    except aio_pika.exceptions.AMQPError:
                        # A passive declare of a missing queue closes the channel: the next
                        # look opens another. One channel for all looks otherwise, so that
                        # the broker's CPU the bench reports is not the sampler's.
                        channel = None
                        continue
                    if count := queue.declaration_result.message_count:
                        ready[handler] = count
                backlog = await self.pool.fetchval(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                )
                self.samples.append((time.time(), ready, int(backlog)))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._stop.wait()
        finally:
            await connection.close()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.run.pool is not None
        return self.run.pool

    def max_between(self, start: float, end: float) -> tuple[int, int]:
        """The largest queue depth and outbox backlog sampled in [start, end]."""
        inside = [(sum(q.values()), b) for t, q, b in self.samples if start <= t <= end]
        return max((q for q, _ in inside), default=0), max((b for _, b in inside), default=0)

    def deepest_between(self, start: float, end: float) -> dict[str, int]:
        """Each handler's largest queue depth sampled in [start, end] (those above zero),
        deepest first: which step fell behind."""
        deepest: dict[str, int] = {}
        for t, ready, _ in self.samples:
            if start <= t <= end:
                for handler, count in ready.items():
                    deepest[handler] = max(deepest.get(handler, 0), count)
        return dict(sorted(deepest.items(), key=lambda item: -item[1]))

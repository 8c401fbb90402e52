"""The load generator: HTTP clients in their own processes, closed or open loop.

Closed loop (``concurrency``): each connection sends its next request when the previous one is
answered, which is how ``place`` is specified. Open loop (``rate``): requests leave on a fixed
schedule whatever the server does, and latency is counted from the scheduled time, so a slow
server cannot hide its queueing by slowing the client down (coordinated omission).

Workers are spawned processes running uvloop and the raw client of ``bench.http``; they report
progress on a queue every half second and their records once at the end. All processes start at
one shared wall-clock instant, so their measurement windows line up.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import queue
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any

import orjson

from orderflow.bench.http import Connection, HttpError
from orderflow.kernel.process import settle_heap


@dataclass(frozen=True)
class LoadSpec:
    """What to send, how hard and for how long."""

    host: str
    port: int
    requests: list[bytes]  # prepared requests, sent in turn
    duration_s: float
    warmup_s: float = 1.0
    concurrency: int | None = None  # closed loop: connections in all
    rate: float | None = None  # open loop: requests per second in all
    max_in_flight: int = 1024  # open loop: beyond this a scheduled request is not sent
    processes: int = 1
    collect_ids: bool = False  # keep (id, wall time of the answer) of every 201


@dataclass
class LoadResult:
    """What all workers saw in the measured window (ids: over the whole run)."""

    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    not_sent: int = 0  # open loop: the in-flight cap was reached
    max_lag_ms: float = 0.0  # open loop: how late the generator sent a request, at worst
    ids: list[tuple[str, float]] = field(default_factory=list)
    started_at: float = 0.0  # wall clock at the start of the run (warm-up included)

    @property
    def ok(self) -> int:
        """Requests answered 2xx."""
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def per_s(self) -> float:
        """2xx answers per second."""
        return self.ok / self.duration_s if self.duration_s else 0.0

    def errors(self) -> dict[str, int]:
        """Failures by status (and connection errors, requests not sent)."""
        out = {str(s): n for s, n in sorted(self.statuses.items()) if not 200 <= s < 300}
        if self.connection_errors:
            out["connection"] = self.connection_errors
        if self.not_sent:
            out["not_sent"] = self.not_sent
        return out


Progress = Callable[[int, int], None]  # (answered so far, failed so far)


async def run_load(spec: LoadSpec, progress: Progress | None = None) -> LoadResult:
    """Run ``spec`` in worker processes and merge what they measured."""
    ctx = mp.get_context("spawn")
    results: Queue[dict[str, Any]] = ctx.Queue()
    ticks: Queue[tuple[int, int, int]] = ctx.Queue()
    start_at = time.time() + 1.5  # time for the spawned interpreters to import
    procs = [
        ctx.Process(target=_worker, args=(spec, i, start_at, results, ticks), daemon=True)
        for i in range(spec.processes)
    ]
    for p in procs:
        p.start()
    seen: dict[int, tuple[int, int]] = {}
    merged = LoadResult(duration_s=spec.duration_s, started_at=start_at)
    got = 0
    deadline = start_at + spec.warmup_s + spec.duration_s + 60
    try:
        while got < len(procs):
            with contextlib.suppress(queue.Empty):
                while True:
                    i, done, failed = ticks.get_nowait()
                    seen[i] = (done, failed)
            if progress is not None and seen:
                progress(sum(d for d, _ in seen.values()), sum(f for _, f in seen.values()))
            with contextlib.suppress(queue.Empty):
                while True:
                    _merge(merged, results.get_nowait())
                    got += 1
            if got < len(procs):
                if time.time() > deadline or not any(p.is_alive() for p in procs):
                    raise RuntimeError("a load generator process died or hung")
                await asyncio.sleep(0.25)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        await asyncio.to_thread(_join_all, procs)
    merged.latencies_s.sort()
    return merged


def _join_all(procs: list[Any]) -> None:
    for p in procs:
        p.join(5)


def _merge(into: LoadResult, part: dict[str, Any]) -> None:
    into.latencies_s.extend(part["latencies"])
    into.statuses.update({int(k): v for k, v in part["statuses"].items()})
    into.connection_errors += part["connection_errors"]
    into.not_sent += part["not_sent"]
    into.max_lag_ms = max(into.max_lag_ms, part["max_lag_ms"])
    into.ids.extend(part["ids"])


# --- inside a worker process ------------------------------------------------------------------


def _worker(
    spec: LoadSpec,
    index: int,
    start_at: float,
    results: Queue[dict[str, Any]],
    ticks: Queue[tuple[int, int, int]],
) -> None:
    import uvloop

    share = _Share(spec, index)
    settle_heap()  # the prepared requests are many objects: no collection should walk them
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out = runner.run(share.run(start_at, ticks))
    results.put(out)


class _Share:
    """One worker's part of the load."""

    def __init__(self, spec: LoadSpec, index: int) -> None:
        n = spec.processes
        self.spec = spec
        self.index = index
        self.requests = spec.requests[index::n] or spec.requests
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.connection_errors = 0
        self.not_sent = 0
        self.max_lag = 0.0
        self.ids: list[tuple[str, float]] = []
        self.done = self.failed = 0
        self.next_request = 0
        self.window = (0.0, 0.0)

    async def run(self, start_at: float, ticks: Queue[tuple[int, int, int]]) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
        t0 = time.perf_counter()
        self.window = (t0 + self.spec.warmup_s, t0 + self.spec.warmup_s + self.spec.duration_s)
        reporter = asyncio.create_task(self._report(ticks))
        try:
            if self.spec.rate:
                await self._open_loop(self.spec.rate / self.spec.processes, t0)
            else:
                await self._closed_loop(_split(self.spec.concurrency or 1, self.spec, self.index))
        finally:
            reporter.cancel()
        ticks.put((self.index, self.done, self.failed))
        return {
            "latencies": self.latencies,
            "statuses": dict(self.statuses),
            "connection_errors": self.connection_errors,
            "not_sent": self.not_sent,
            "max_lag_ms": self.max_lag * 1000,
            "ids": self.ids,
        }

    async def _report(self, ticks: Queue[tuple[int, int, int]]) -> None:
        while True:
            await asyncio.sleep(0.5)
            ticks.put((self.index, self.done, self.failed))

    def _take(self) -> bytes:
        raw = self.requests[self.next_request % len(self.requests)]
        self.next_request += 1
        return raw

    async def _one(self, conn: Connection, raw: bytes, started: float) -> None:
        try:
            status, body = await conn.request(raw)
        except HttpError:
            status, body = 0, b""
        finished = time.perf_counter()
        self.done += 1
        if not 200 <= status < 300:
            self.failed += 1
        if status == 201 and self.spec.collect_ids:
            self.ids.append((str(orjson.loads(body)["id"]), time.time()))
        if self.window[0] <= started and finished <= self.window[1]:
            if status == 0:
                self.connection_errors += 1
            else:
                self.statuses[status] += 1
                self.latencies.append(finished - started)

    async def _closed_loop(self, connections: int) -> None:
        async def client() -> None:
            conn = Connection(self.spec.host, self.spec.port)
            try:
                while time.perf_counter() < self.window[1]:
                    await self._one(conn, self._take(), time.perf_counter())
            finally:
                conn.close()

        await asyncio.gather(*(client() for _ in range(connections)))

    async def _open_loop(self, rate: float, t0: float) -> None:
        idle: list[Connection] = []
        running: set[asyncio.Task[None]] = set()
        cap = max(1, self.spec.max_in_flight // self.spec.processes)

        async def send(raw: bytes, scheduled: float) -> None:
            conn = idle.pop() if idle else Connection(self.spec.host, self.spec.port)
            await self._one(conn, raw, scheduled)
            idle.append(conn)

        k = 0
        while True:
            scheduled = t0 + k / rate
            if scheduled >= self.window[1]:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.max_lag = max(self.max_lag, -delay)
            k += 1
            if len(running) >= cap:
                if scheduled >= self.window[0]:
                    self.not_sent += 1
                continue
            task = asyncio.create_task(send(self._take(), scheduled))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.wait(running)
        for conn in idle:
            conn.close()


def _split(total: int, spec: LoadSpec, index: int) -> int:
    base, extra = divmod(total, spec.processes)
    return base + (1 if index < extra else 0)

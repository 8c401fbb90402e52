"""``bench lifecycle``: orders placed at a steady rate (open loop) and run to a terminal state
by ``orderflow up`` with the autopilot at zero delay.

The rate is stepped up; each step reports completed orders/s, events/s, the end-to-end latency
from the client's 201 to ``order.delivered`` on the timeline, and the depth of the work queues
(passive ``queue_declare`` over AMQP: no management plugin needed). The knee is the highest
step the system keeps up with: it completes 95 % of what is offered, with p99 under 500 ms.
A first, slow step measures the idle latency from the 201 to ``payment.initiated``. Each step
also says what its orders cost: the machine's CPU per completed order, and the deliveries each
took; with the ceilings, the run prices an order at their costs (the roof, ``ceiling_cost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from typing import Any

import aio_pika
import asyncpg

from orderflow.bench.cpu import CpuSampler, cores
from orderflow.bench.handlers import deliveries, scrape, step_figures
from orderflow.bench.loadgen import LoadResult, LoadSpec, run_load
from orderflow.bench.place import make_catalogue, order_bodies, order_requests, ratios, rss_summary
from orderflow.bench.runner import BenchRun
from orderflow.bench.servers import free_port, free_ports, orderflow_command, start_server
from orderflow.bench.stats import latency_ms, ratio
from orderflow.bench.vacuum import StandInVacuum
from orderflow.domain import saga
from orderflow.kernel.topology import Names

KNEE_P99_MS = 500.0
KNEE_SHARE = 0.95
TERMINAL = ("delivered", "cancelled")


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


async def _wait_terminal(pool: asyncpg.Pool, ids: list[uuid.UUID], timeout_s: float) -> int:
    """Wait until every order of ``ids`` is terminal; the number still open at the end."""
    deadline = time.monotonic() + timeout_s
    while True:
        open_ = await pool.fetchval(
            "SELECT count(*) FROM orders WHERE id = ANY($1::uuid[]) AND status <> ALL($2)",
            ids,
            list(TERMINAL),
        )
        if not open_ or time.monotonic() > deadline:
            return int(open_)
        await asyncio.sleep(0.5)


async def _wait_outbox(pool: asyncpg.Pool, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
            return
        await asyncio.sleep(0.5)


async def _step_figures(
    pool: asyncpg.Pool, result: LoadResult, *, offered: float, warmup_s: float
) -> dict[str, Any]:
    ids = [uuid.UUID(i) for i, _ in result.ids]
    answered = dict(result.ids)
    rows = await _timelines(pool, ids)
    firsts = {}
    for r in reversed(rows):  # oldest last: the first of each (order, event) wins
        if r["event_type"] in ("payment.initiated", "order.delivered"):
            firsts[(r["order_id"], r["event_type"])] = float(r["at"])
    e2e: list[float] = []
    initiated: list[float] = []
    for (order_id, event_type), at in firsts.items():
        delta = at - answered[str(order_id)]
        (e2e if event_type == "order.delivered" else initiated).append(max(delta, 0.0))
    start = result.started_at + warmup_s
    end = start + result.duration_s
    window = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM order_timeline WHERE event_type IN "
        "        ('order.delivered', 'order.cancelled') "
        "        AND recorded_at BETWEEN to_timestamp($1) AND to_timestamp($2)) AS completed, "
        "       (SELECT count(*) FROM outbox "
        "        WHERE created_at BETWEEN to_timestamp($1) AND to_timestamp($2)) AS events",
        start,
        end,
    )
    return {
        "offered_per_s": offered,
        "placed_per_s": round(result.per_s, 1),
        "completed_per_s": round(window["completed"] / result.duration_s, 1),
        "events_per_s": round(window["events"] / result.duration_s, 1),
        "e2e_ms": latency_ms(e2e),
        "payment_initiated_ms": latency_ms(initiated),
        "hops_ms": _hops(rows),
        "placement_ms": latency_ms(result.latencies_s),
        "errors": result.errors(),
        "max_lag_ms": round(result.max_lag_ms, 1),
        "orders": len(ids),
        "window": (start, end),
    }


async def _timelines(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """Every timeline row of these orders, oldest first per order, with its time (epoch s) and
    the gap since the order's previous row."""
    return list(
        await pool.fetch(
            "SELECT order_id, event_type, extract(epoch FROM recorded_at) AS at, "
            "       extract(epoch FROM recorded_at - lag(recorded_at) OVER w) AS gap "
            "FROM order_timeline WHERE order_id = ANY($1::uuid[]) "
            "WINDOW w AS (PARTITION BY order_id ORDER BY id) ORDER BY order_id, id",
            ids,
        )
    )


def _hops(rows: list[asyncpg.Record]) -> dict[str, dict[str, float]]:
    """Per event type, the time from the order's previous event to this one.

    Timeline rows carry their transaction's start time, so a hop is the previous step's
    transaction, the relay, the broker and the wait for this step's transaction to begin.
    """
    gaps: dict[str, list[float]] = {}
    for r in rows:
        if r["gap"] is not None:
            gaps.setdefault(r["event_type"], []).append(max(float(r["gap"]), 0.0))
    return {event_type: latency_ms(values) for event_type, values in gaps.items()}


def _keeps_up(step: dict[str, Any]) -> bool:
    p99 = step["e2e_ms"].get("p99")
    return (
        step["completed_per_s"] >= KNEE_SHARE * step["offered_per_s"]
        and p99 is not None
        and p99 < KNEE_P99_MS
        and not step.get("unfinished")
        and not step["errors"]
    )


async def run_lifecycle(
    run: BenchRun,
    *,
    rates: list[float],
    step_s: float,
    ceiling: dict[str, Any] | None,
    warmup_s: float = 2.0,
    worker_processes: int = 1,
    idle_rate: float = 5.0,
    idle_s: float = 5.0,
    drain_timeout_s: float = 60.0,
    vacuum: bool = True,
) -> dict[str, Any]:
    """Step the offered rate through ``rates``; report each step, the knee, memory, audit."""
    assert run.pool is not None
    pool = run.pool
    catalogue = await make_catalogue(
        pool, products=2000, customers=200, stock=10**8, currency=run.settings.currency
    )
    settings = run.settings.model_copy(update={"autopilot": True})
    names = Names.from_settings(settings)
    queues = {s.name: names.handler(s.name).work for s in saga.subscriptions(autopilot=True)}
    port = free_port()
    # The relay's metrics on the first port, each worker's on the next ones (orderflow up).
    metrics_base = free_ports(worker_processes + 1)
    worker_metrics = [metrics_base + 1 + i for i in range(worker_processes)]
    args = ["up", "--port", str(port), "--autopilot-delay", "0"]
    args += ["--workers", str(worker_processes), "--metrics-port", str(metrics_base)]
    server = await start_server(
        "up", orderflow_command(*args), port=port, env=run.env(), log_dir=run.log_dir
    )
    requests = order_requests(run, port, order_bodies(catalogue, count=5000, hot=False))
    steps: list[dict[str, Any]] = []
    try:
        async with (
            QueueSampler(run, queues) as sampler,
            CpuSampler() as cpu,
            StandInVacuum(pool, enabled=vacuum and run.autovacuum_off) as vacuuming,
        ):
            plan = [(idle_rate, idle_s, "idle"), *((r, step_s, f"{r:g}/s") for r in rates)]
            for n, (rate, seconds, label) in enumerate(plan):
                spec = LoadSpec(
                    host="127.0.0.1",
                    port=port,
                    requests=requests[n * 500 :] + requests[: n * 500],
                    duration_s=seconds,
                    warmup_s=warmup_s,
                    rate=rate,
                    processes=run.loadgen_processes,
                    collect_ids=True,
                )
                with run.progress(f"lifecycle {label}", warmup_s + seconds) as line:
                    # What the handlers did while the step's load ran (warm-up included).
                    counted, since = await scrape(worker_metrics), time.monotonic()
                    result = await run_load(spec, line.update)
                    handled = step_figures(
                        counted, await scrape(worker_metrics), time.monotonic() - since
                    )
                    line.extra = "waiting for the orders to finish"
                    unfinished = await _wait_terminal(
                        pool, [uuid.UUID(i) for i, _ in result.ids], drain_timeout_s
                    )
                    # The step's orders are all terminal, and the step before had drained.
                    delivered = deliveries(counted, await scrape(worker_metrics))
                step = await _step_figures(pool, result, offered=rate, warmup_s=warmup_s)
                step["deliveries_per_order"] = ratio(delivered, len(result.ids), digits=1)
                start, end = step["window"]
                step["cpu_ms_per_order"] = cpu.ms_each(start, end, step["completed_per_s"])
                step["cpu_by_component"] = _by_component(
                    cpu.by_component(start, end, servers=server.pid, bench=os.getpid()),
                    step["completed_per_s"],
                )
                step["label"], step["unfinished"] = label, unfinished
                step["max_queue_depth"], step["max_outbox_backlog"] = sampler.max_between(
                    *step["window"]
                )
                step["deepest_queues"] = sampler.deepest_between(*step["window"])
                step["handlers"] = handled
                steps.append(step)
                if n == 0:
                    server.mark_rss_start()  # warm now
                elif not _keeps_up(step):
                    break  # past the knee: higher steps only queue up more
            queue_depths = [(t, sum(q.values()), b) for t, q, b in sampler.samples]
        rss = server.rss_report()
    finally:
        await server.stop()
    await _wait_outbox(pool, 10)
    audit = await run.audit()
    figures = _result(run, steps, queue_depths, rss, audit, ceiling, rates, step_s)
    figures["params"]["vacuum"] = _vacuum_params(vacuuming, run)
    return figures


def _by_component(
    busy: dict[str, float] | None, completed_per_s: float
) -> dict[str, dict[str, float]]:
    """Per part of the system: the share of a core it kept busy, and its CPU per order."""
    if not busy or not completed_per_s:
        return {}
    return {
        part: {
            "core_pct": round(100 * cores_busy, 1),
            "ms_per_order": round(cores_busy * 1000 / completed_per_s, 2),
        }
        for part, cores_busy in busy.items()
    }


def _vacuum_params(vacuuming: StandInVacuum, run: BenchRun) -> dict[str, Any]:
    """Who vacuumed the run's database, and how often the bench did."""
    if vacuuming.enabled:
        return {"by": "bench (autovacuum off)", "runs": dict(sorted(vacuuming.runs.items()))}
    return {"by": "none (autovacuum off)" if run.autovacuum_off else "autovacuum", "runs": {}}


def ceiling_cost(step: dict[str, Any], ceiling: dict[str, Any] | None) -> dict[str, Any] | None:
    """What an order of ``step`` would cost if every part of it ran at its ceiling's price,
    and the orders/s the machine's cores allow at that cost.

    An order is one placement, priced as one request of ceiling (a) (which includes its
    transaction); one confirmed publish per event, each priced as a whole round trip of
    ceiling (b) (a publish, a delivery, an ack); and the deliveries beyond one per event, each
    priced as what a second queue adds to a publish ((b2) less (b)). Nothing is counted for
    the saga's transactions or the handlers' own work, so this is a floor under the cost of an
    order and a roof over the rate: no code of ours reaches it.
    """
    prices = ceiling or {}
    a = (prices.get("http_insert") or {}).get("cpu_ms_each")
    b = (prices.get("mq_round_trips") or {}).get("cpu_ms_each")
    b2 = (prices.get("mq_two_copies") or {}).get("cpu_ms_each")
    completed = step["completed_per_s"]
    if a is None or b is None or not completed:
        return None
    events = step["events_per_s"] / completed
    extra = max((step.get("deliveries_per_order") or 0.0) - events, 0.0)
    extra_ms = max(b2 - b, 0.0) if b2 is not None else 0.0
    ms = a + events * b + extra * extra_ms
    return {
        "http_insert_ms": a,
        "mq_round_trip_ms": b,
        "extra_delivery_ms": round(extra_ms, 2),
        "events_per_order": round(events, 1),
        "extra_deliveries_per_order": round(extra, 1),
        "ms_per_order": round(ms, 2),
        "cores": cores(),
        "orders_per_s": round(cores() * 1000 / ms, 1),
    }


def _result(
    run: BenchRun,
    steps: list[dict[str, Any]],
    queue_depths: list[tuple[float, int, int]],
    rss: list[dict[str, Any]],
    audit: dict[str, Any],
    ceiling: dict[str, Any] | None,
    rates: list[float],
    step_s: float,
) -> dict[str, Any]:
    idle, loaded = steps[0], steps[1:]
    good = [s for s in loaded if _keeps_up(s)]
    knee = good[-1] if good else None
    best = knee or max(loaded, key=lambda s: s["completed_per_s"], default=idle)
    errors: dict[str, int] = {}
    for s in steps:
        for k, v in s["errors"].items():
            errors[k] = errors.get(k, 0) + v
    t0 = queue_depths[0][0] if queue_depths else 0.0
    mq = (ceiling or {}).get("mq_round_trips", {}).get("per_s")
    floor = ceiling_cost(best, ceiling)
    return {
        "scenario": "lifecycle",
        "orders_per_s": best["completed_per_s"],
        "events_per_s": best["events_per_s"],
        "latency_ms": best["e2e_ms"],
        "errors": errors,
        "ceiling": ceiling,
        "ratio_to_ceiling": {
            **ratios(best["completed_per_s"], ceiling),
            "events_to_mq_round_trips": ratio(best["events_per_s"], mq),
            "cost_at_ceilings": ratio(best["completed_per_s"], (floor or {}).get("orders_per_s")),
        },
        "cpu_ms_per_order": best.get("cpu_ms_per_order"),
        "audit_ok": bool(audit["ok"]),
        "audit": audit,
        "rss_mb": rss_summary(rss),
        "params": {
            "rates": rates,
            "step_s": step_s,
            "autopilot_delay_s": 0,
            "loadgen_processes": run.loadgen_processes,
        },
        "lifecycle": {
            "knee": (
                f"{knee['offered_per_s']:g} orders/s offered, {knee['completed_per_s']} completed/s"
                if knee
                else f"below {loaded[0]['offered_per_s']:g} orders/s: the lowest loaded step fell "
                "behind (the idle step kept up)"
                if loaded
                else "not measured: no loaded step ran"
            ),
            "cost_at_ceilings": floor,
            "idle_payment_initiated_ms": idle["payment_initiated_ms"],
            "idle_e2e_ms": idle["e2e_ms"],
            "steps": [{k: v for k, v in s.items() if k != "window"} for s in steps],
            # [seconds since the first sample, ready messages, outbox backlog]
            "queue_depths": [(round(t - t0, 1), q, b) for t, q, b in queue_depths],
        },
    }

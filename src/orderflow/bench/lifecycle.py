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
import os
import time
import uuid
from typing import Any

import asyncpg

from orderflow.bench.cpu import CpuSampler
from orderflow.bench.handlers import deliveries, scrape, step_figures
from orderflow.bench.lifecycle_figures import (
    by_component,
    keeps_up,
    lifecycle_result,
    load_step_figures,
    vacuum_params,
)
from orderflow.bench.loadgen import LoadSpec, run_load
from orderflow.bench.place import make_catalogue, order_bodies, order_requests
from orderflow.bench.queue_sampler import QueueSampler
from orderflow.bench.runner import BenchRun
from orderflow.bench.servers import free_port, free_ports, orderflow_command, start_server
from orderflow.bench.stats import ratio
from orderflow.bench.vacuum import StandInVacuum
from orderflow.domain import saga
from orderflow.kernel.topology import Names

TERMINAL = ("delivered", "cancelled")


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
                step = await load_step_figures(pool, result, offered=rate, warmup_s=warmup_s)
                step["deliveries_per_order"] = ratio(delivered, len(result.ids), digits=1)
                start, end = step["window"]
                step["cpu_ms_per_order"] = cpu.ms_each(start, end, step["completed_per_s"])
                step["cpu_by_component"] = by_component(
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
                elif not keeps_up(step):
                    break  # past the knee: higher steps only queue up more
            queue_depths = [(t, sum(q.values()), b) for t, q, b in sampler.samples]
        rss = server.rss_report()
    finally:
        await server.stop()
    await _wait_outbox(pool, 10)
    audit = await run.audit()
    figures = lifecycle_result(run, steps, queue_depths, rss, audit, ceiling, rates, step_s)
    figures["params"]["vacuum"] = vacuum_params(vacuuming, run)
    return figures

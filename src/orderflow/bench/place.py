"""``bench place``: HTTP order placement only, against a catalogue big enough to spread the load.

The catalogue is written straight into the run's fresh database (products with their initial
stock movement, so the audit's ledger holds). Every order has one to four distinct lines;
``hot`` puts one product on every order, so that all of them touch the same row.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from orderflow.bench.http import build_request
from orderflow.bench.loadgen import LoadResult, LoadSpec, run_load
from orderflow.bench.runner import BenchRun
from orderflow.bench.servers import free_port, orderflow_command, start_server
from orderflow.bench.stats import latency_ms, ratio
from orderflow.operations import Check

_PRODUCTS = """
WITH p AS (
    INSERT INTO products (id, sku, name, price, currency, stock)
    SELECT gen_random_uuid(), $1 || '-' || n, 'Bench product ' || n, 100 + (n * 37) % 5000,
           $2, $3
    FROM generate_series(1, $4) AS n
    RETURNING id, stock
), m AS (
    INSERT INTO stock_movements (product_id, kind, quantity) SELECT id, 'initial', stock FROM p
)
SELECT id FROM p
"""
_CUSTOMERS = """
INSERT INTO customers (id, email, name)
SELECT gen_random_uuid(), $1 || '-' || n || '@bench.example', 'Bench ' || n
FROM generate_series(1, $2) AS n
RETURNING id
"""


@dataclass(frozen=True)
class Catalogue:
    products: list[uuid.UUID]
    customers: list[uuid.UUID]


async def make_catalogue(
    pool: asyncpg.Pool, *, products: int, customers: int, stock: int, currency: str
) -> Catalogue:
    """Products with plenty of stock and customers, in bulk."""
    tag = uuid.uuid4().hex[:6]
    async with pool.acquire() as conn, conn.transaction():
        pids = [r["id"] for r in await conn.fetch(_PRODUCTS, f"B{tag}", currency, stock, products)]
        cids = [r["id"] for r in await conn.fetch(_CUSTOMERS, f"b{tag}", customers)]
    return Catalogue(pids, cids)


def order_bodies(
    catalogue: Catalogue,
    *,
    count: int,
    hot: bool,
    payment_method: str | None = "pm_approve",
    seed: int = 7,
) -> list[bytes]:
    """JSON bodies of orders with 1-4 distinct lines; with ``hot`` all share one product."""
    rng = random.Random(seed)
    hot_product = catalogue.products[0]
    spread = catalogue.products[1:] if hot else catalogue.products
    bodies = []
    for _ in range(count):
        n = rng.randint(1, 4)
        chosen = rng.sample(spread, n - 1 if hot else n)
        if hot:
            chosen.append(hot_product)
        body: dict[str, Any] = {
            "customer_id": str(rng.choice(catalogue.customers)),
            "lines": [{"product_id": str(p), "quantity": rng.randint(1, 3)} for p in chosen],
        }
        if payment_method:
            body["payment_token"] = payment_method
        bodies.append(orjson.dumps(body))
    return bodies


def order_requests(run: BenchRun, port: int, bodies: list[bytes]) -> list[bytes]:
    """Prepared ``POST /api/v1/orders`` requests carrying the run's credentials."""
    return [
        build_request("POST", "127.0.0.1", port, "/api/v1/orders", body, run.auth)
        for body in bodies
    ]


def summarize(result: LoadResult) -> dict[str, Any]:
    """The figures every HTTP scenario reports."""
    return {
        "orders_per_s": round(result.per_s, 1),
        "latency_ms": latency_ms(result.latencies_s),
        "errors": result.errors(),
        "requests": sum(result.statuses.values()) + result.connection_errors,
    }


async def run_place(
    run: BenchRun,
    *,
    concurrency: int,
    duration_s: float,
    hot: bool,
    ceiling: dict[str, Any] | None,
    products: int = 2000,
    warmup_s: float = 2.0,
) -> dict[str, Any]:
    """Place orders over HTTP with ``concurrency`` clients; audit; report with ratios."""
    assert run.pool is not None
    catalogue = await make_catalogue(
        run.pool, products=products, customers=200, stock=10**8, currency=run.settings.currency
    )
    port = free_port()
    server = await start_server(
        "api",
        orderflow_command("api", "--port", str(port), "--workers", str(run.server_workers)),
        port=port,
        env=run.env(),
        log_dir=run.log_dir,
    )
    name = "place-hot" if hot else "place"
    try:
        server.mark_rss_start()
        spec = LoadSpec(
            host="127.0.0.1",
            port=port,
            requests=order_requests(run, port, order_bodies(catalogue, count=5000, hot=hot)),
            duration_s=duration_s,
            warmup_s=warmup_s,
            concurrency=concurrency,
            processes=run.loadgen_processes,
        )
        with run.progress(name, warmup_s + duration_s) as line:
            result = await run_load(spec, line.update)
        rss = server.rss_report()
    finally:
        await server.stop()
    # The API fails open when Redis errs (no limit, no cache): such a run measured less
    # than the full edge, and says so.
    redis_failures = await asyncio.to_thread(server.log_count, "redis_unavailable")
    if redis_failures:
        run.console.print(
            f"[yellow]{name}: Redis failed {redis_failures} times during the run; the API "
            "served those requests without rate limit or cache[/yellow]"
        )
    # Only the API runs: nothing publishes the outbox or moves orders on, by design.
    audit = await run.audit(skip=frozenset({Check.STALE, Check.UNPUBLISHED}))
    figures = summarize(result)
    return {
        "scenario": name,
        **figures,
        "params": {
            "concurrency": concurrency,
            "duration_s": duration_s,
            "server_workers": run.server_workers,
            "loadgen_processes": run.loadgen_processes,
            "products": products,
            "hot": hot,
        },
        "ceiling": ceiling,
        "ratio_to_ceiling": ratios(figures["orders_per_s"], ceiling),
        "audit_ok": bool(audit["ok"]),
        "audit": audit,
        "rss_mb": rss_summary(rss),
        "redis_failures": redis_failures,
    }


def ratios(per_s: float, ceiling: dict[str, Any] | None) -> dict[str, float | None]:
    """``per_s`` as a share of each ceiling."""
    if not ceiling:
        return {}
    return {
        "http_insert": ratio(per_s, ceiling.get("http_insert", {}).get("per_s")),
        "pg_commits": ratio(per_s, ceiling.get("pg_commits", {}).get("per_s")),
        "mq_round_trips": ratio(per_s, ceiling.get("mq_round_trips", {}).get("per_s")),
    }


def rss_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Total RSS at the end, whether any process grew, and the per-process rows."""
    return {
        "total": round(sum(r["rss_end_mb"] for r in rows), 1),
        "grew": any(r["grew"] for r in rows),
        "processes": rows,
    }

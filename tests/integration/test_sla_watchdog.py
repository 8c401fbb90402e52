"""The SLA watchdog: orders past their status's deadline are marked, cleared when they move
on, and counted per status by the worker's ``orderflow_orders_overdue`` gauge."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid

import asyncpg
import httpx
import pytest

from orderflow.domain.sla import deadlines
from orderflow.operations.sla import mark_overdue, overdue_orders
from orderflow.settings import Settings
from tests.conftest import child_env
from tests.e2e.conftest import free_port
from tests.factories import make_customer, make_product, place_order


async def _age(pool: asyncpg.Pool, order_id: str, seconds: float) -> None:
    """Pretend the order entered its status ``seconds`` ago."""
    await pool.execute(
        "UPDATE orders SET updated_at = now() - make_interval(secs => $2) WHERE id = $1",
        uuid.UUID(order_id),
        seconds,
    )


async def _marked(pool: asyncpg.Pool, order_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT * FROM order_overdue WHERE order_id = $1", uuid.UUID(order_id)
    )
    return row


async def _order(client: httpx.AsyncClient, *, token: str | None = "pm_approve") -> str:
    product = await make_product(client, price=900)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=token
    )
    return str(order["id"])


async def test_an_order_past_its_deadline_is_marked_and_cleared_when_it_moves_on(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    limits = deadlines({"created": 600})
    late, fresh = await _order(client), await _order(client)
    await _age(pool, late, 601)
    await _age(pool, fresh, 599)

    counts = await mark_overdue(pool, deadlines=limits)
    assert set(counts) == set(limits)  # every open status is reported, 0 included
    assert counts["created"] >= 1
    mark = await _marked(pool, late)
    assert mark is not None
    assert mark["status"] == "created"
    assert (mark["due_at"] - mark["since"]).total_seconds() == 600
    assert await _marked(pool, fresh) is None
    listed = [o.order_id for o in await overdue_orders(pool, limit=1000)]
    assert late in listed
    assert fresh not in listed
    again = await mark_overdue(pool, deadlines=limits)  # idempotent
    assert again == counts
    assert (await _marked(pool, late))["marked_at"] == mark["marked_at"]  # type: ignore[index]

    cancelled = await client.post(f"/api/v1/orders/{late}/cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    after = await mark_overdue(pool, deadlines=limits)
    assert await _marked(pool, late) is None
    assert after["created"] == counts["created"] - 1
    assert "cancelled" not in after
    assert "delivered" not in after


async def test_overdue_orders_are_listed_oldest_first(
    pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    older, newer = await _order(client, token=None), await _order(client, token=None)
    await _age(pool, older, 7300)
    await _age(pool, newer, 3700)
    await mark_overdue(pool, deadlines=deadlines())  # awaiting_payment: 1 h by default
    listed = [o for o in await overdue_orders(pool, limit=1000) if o.order_id in {older, newer}]
    assert [o.order_id for o in listed] == [older, newer]
    assert all(o.status == "awaiting_payment" for o in listed)


def test_deadlines_are_configurable_per_status_and_refuse_unknown_ones() -> None:
    defaults = deadlines()
    assert defaults["reserved"] == 86400
    assert defaults["shipped"] == 7 * 86400
    assert "delivered" not in defaults
    assert "cancelled" not in defaults
    assert Settings(sla_deadlines_s={"paid": 30}).sla_deadlines_s == {**defaults, "paid": 30}
    with pytest.raises(ValueError, match="no deadline for 'delivered'"):
        Settings(sla_deadlines_s={"delivered": 30})
    with pytest.raises(ValueError, match="must be > 0"):
        Settings(sla_deadlines_s={"paid": 0})


def _gauge(text: str, status: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f'orderflow_orders_overdue{{status="{status}"}}'):
            return float(line.split()[-1])
    return None


async def test_the_worker_process_marks_late_orders_and_exports_the_gauge(
    settings: Settings, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    """The real ``orderflow worker`` (no relay: the orders stay where they are)."""
    late = await _order(client)
    await _age(pool, late, 5)
    port = free_port()
    env = child_env(
        settings,
        ORDERFLOW_QUEUE_PREFIX=f"{settings.queue_prefix}.sla",
        ORDERFLOW_EXCHANGE=f"{settings.exchange}.sla",
        ORDERFLOW_SLA_DEADLINES_S=json.dumps({"created": 2}),
        ORDERFLOW_SLA_WATCH_INTERVAL_S="0.2",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "orderflow.entrypoints.cli", "worker", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while await _marked(pool, late) is None:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker did not mark the late order"
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient() as http:
            while True:
                scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                exported = _gauge(scraped, "created")
                marked = await pool.fetchval(
                    "SELECT count(*) FROM order_overdue WHERE status = 'created'"
                )
                if exported == marked:
                    break
                assert time.monotonic() < deadline, f"gauge {exported} != {marked} marked"
                await asyncio.sleep(0.2)
        assert exported is not None
        assert exported >= 1
        assert _gauge(scraped, "shipped") == 0  # every open status is exported
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0

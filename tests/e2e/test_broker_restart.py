"""A broker restart while retries wait loses none of them (ADR 0028: they wait in PostgreSQL,
not in the broker): every order whose charge was waiting to be retried reaches its terminal
state, charged once."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx
import pytest

from orderflow.kernel import scheduled
from orderflow.kernel.topology import Names
from orderflow.settings import Settings
from tests.e2e.conftest import wait_for_status
from tests.factories import make_customer, make_product, place_order
from tests.integration.backbone.broker import rabbitmqctl, start_broker_app

pytestmark = [pytest.mark.e2e, pytest.mark.stops_services]

ORDERS = 20


async def _waiting_retries(pool: asyncpg.Pool, settings: Settings) -> int:
    """The charges scheduled for a retry (the system's own database)."""
    queue = Names.from_settings(settings).handler("payments.charge").work
    waiting = await scheduled.waiting_by_queue(pool, prefix=queue)
    return waiting.get(queue, {}).get("retry", 0)


async def test_broker_restart_while_retries_wait_leaves_no_order_stuck(
    http: httpx.AsyncClient, pool: asyncpg.Pool, e2e_settings: Settings
) -> None:
    product = await make_product(http, price=500, stock=ORDERS)
    customer = await make_customer(http)
    # pm_flaky fails on attempts 1 and 2: each charge waits for a retry twice.
    orders = [
        await place_order(
            http, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token="pm_flaky"
        )
        for _ in range(ORDERS)
    ]
    deadline = time.monotonic() + 30
    while await _waiting_retries(pool, e2e_settings) < ORDERS // 2:
        assert time.monotonic() < deadline, "the charges never waited for a retry"
        await asyncio.sleep(0.05)
    try:
        await rabbitmqctl("stop_app")
        await asyncio.sleep(5)  # every retry's TTL runs out while the broker is away
    finally:
        await start_broker_app()

    # Within the reconciler's allowance: what delivers them is the retries PostgreSQL kept,
    # not a re-drive of orders the broker lost (tests/integration/test_reconcile.py has those).
    within = e2e_settings.reconcile_stall_s * 2 / 3
    restarted = time.monotonic()
    for order in orders:
        left = max(1.0, within - (time.monotonic() - restarted))
        done = await wait_for_status(http, order["id"], {"delivered", "cancelled"}, timeout_s=left)
        assert done["status"] == "delivered", done
    # Each authorized once and, its stock reserved, captured once (the capture may trail the
    # delivery by a moment: it is a step of its own).
    ids = [uuid.UUID(o["id"]) for o in orders]
    deadline = time.monotonic() + 15
    while True:
        kinds = await pool.fetch(
            "SELECT kind, count(*) AS n FROM payment_transactions "
            "WHERE order_id = ANY($1::uuid[]) AND kind IN ('authorize', 'capture') GROUP BY kind",
            ids,
        )
        money = {r["kind"]: r["n"] for r in kinds}
        if money.get("capture") == ORDERS or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert money == {"authorize": ORDERS, "capture": ORDERS}

"""Every duty of every process survives PostgreSQL cutting its sessions, again and again.

``orderflow up`` (api, relay, two workers) runs on a database of its own; every session of
that database is terminated (``pg_terminate_backend``, what a restart or a failover does to
them; the shared server itself keeps running) several times. Then each duty must still work:
an unpaid order still expires (the workers' sweeper), a paid order still runs to the end
although the relay polls only once a minute (so each step needs a NOTIFY to wake it: the
relay's LISTEN connection), and every process reports itself healthy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from orderflow.domain.access import Role
from orderflow.domain.orders import CancelReason
from orderflow.kernel.database import database_name
from orderflow.settings import Settings
from tests.e2e.conftest import free_port, own_gateway, process_env, wait_for_status
from tests.e2e.processes import free_port_run, own_database, start, stop, wait_ready
from tests.factories import make_customer, make_product
from tests.integration.conftest import bearer

CUTTING_S = 4.0


@dataclass(frozen=True)
class System:
    base: str
    health: list[str]  # every process's /healthz
    pool: asyncpg.Pool
    database: str
    log: Path


async def _cut_every_session(pool: asyncpg.Pool, database: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    )


@pytest.fixture
async def system(settings: Settings, tmp_path: Path) -> AsyncIterator[System]:
    async with own_database(settings, "duties") as dsn:
        port, metrics = free_port(), free_port_run(3)
        env = (
            process_env(settings)
            | own_gateway()
            | {
                "ORDERFLOW_DATABASE_URL": dsn,
                "ORDERFLOW_EXCHANGE": f"{settings.exchange}.duties",
                "ORDERFLOW_QUEUE_PREFIX": f"{settings.queue_prefix}.duties",
                "ORDERFLOW_UNPAID_ORDER_TTL_S": "2",
                "ORDERFLOW_EXPIRY_SWEEP_INTERVAL_S": "0.5",
                "ORDERFLOW_RELAY_POLL_INTERVAL_S": "60",  # only a NOTIFY wakes the relay in time
            }
        )
        log = tmp_path / "up.log"
        args = ["up", "--port", str(port), "--workers", "2", "--metrics-port", str(metrics)]
        proc = start(args, env, log)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        base = f"http://127.0.0.1:{port}"
        # The api's, then the relay's and the two workers' (on the metrics ports).
        health = [f"{base}/healthz"] + [f"http://127.0.0.1:{metrics + i}/healthz" for i in range(3)]
        try:
            await wait_ready(health, [proc], log)
            yield System(base, health, pool, database_name(dsn), log)
        finally:
            await pool.close()
            stop([proc])


async def test_every_duty_survives_repeated_session_cuts(system: System) -> None:
    key = await bearer(system.pool, Role.ADMIN)
    async with httpx.AsyncClient(
        base_url=system.base, timeout=10, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        product = await make_product(client)
        customer = await make_customer(client)
        # Before the cuts: one order paid, to have every duty busy at least once.
        first = await client.post(
            "/api/v1/orders",
            json={
                "customer_id": customer["id"],
                "lines": [{"product_id": product["id"], "quantity": 1}],
                "payment_token": "pm_approve",
            },
        )
        assert first.status_code == 201, first.text
        await wait_for_status(client, first.json()["id"], {"delivered"}, timeout_s=30)

        # Every 50 ms for a few seconds: the sweeps, claims and the LISTEN connection are
        # cut before, during and after their statements (asyncpg then raises errors of
        # several kinds, InternalClientError among them, which used to end the sweeper).
        cut = 0
        deadline = time.monotonic() + CUTTING_S
        while time.monotonic() < deadline:
            cut += await _cut_every_session(system.pool, system.database)
            await asyncio.sleep(0.05)
        assert cut >= 20  # the sessions of the api, the relay and the workers went

        async def place(token: str | None) -> str:
            for _ in range(20):  # the API's own pool may still hand out a cut connection
                answer = await client.post(
                    "/api/v1/orders",
                    json={
                        "customer_id": customer["id"],
                        "lines": [{"product_id": product["id"], "quantity": 1}],
                        **({"payment_token": token} if token else {}),
                    },
                )
                if answer.status_code == 201:
                    return str(answer.json()["id"])
                assert answer.status_code == 503, answer.text
                await asyncio.sleep(0.2)
            raise AssertionError("the API kept refusing orders after the cuts")

        unpaid = await place(None)
        paid = await place("pm_approve")
        # The relay's poll is a minute away: each of the 7 steps needs a NOTIFY to wake it.
        await wait_for_status(client, paid, {"delivered"}, timeout_s=30)
        expired = await wait_for_status(client, unpaid, {"cancelled"}, timeout_s=30)
        assert expired["cancel_reason"] == CancelReason.PAYMENT_EXPIRED.value, expired

    for url in system.health:
        answer = httpx.get(url, timeout=2)
        assert answer.status_code == 200, (url, answer.text)
        assert answer.json()["status"] == "ok"

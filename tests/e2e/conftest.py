"""End-to-end fixtures: the real processes (``orderflow up``: migrate, api, relay, worker and
autopilot) started as subprocesses against the real services, on this run's database, exchange
and queues."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from orderflow.domain.access import Role
from orderflow.settings import Settings
from tests.conftest import child_env, fresh_database, open_pool, settings_apart
from tests.integration.conftest import bearer

AUTOPILOT_DELAY_S = 0.4
UNPAID_TTL_S = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(settings: Settings) -> dict[str, str]:
    """Environment for the system under test: this run's settings, plus e2e tuning. A system
    that runs its own payment gateway (``up``) needs settings with a ``gateway_url`` of its own
    (``settings_apart`` gives one; ``own_gateway`` for the rest)."""
    return child_env(
        settings,
        ORDERFLOW_PAYMENT_SLOW_DELAY_S="0.2",
        ORDERFLOW_LOG_LEVEL="WARNING",
        ORDERFLOW_UNPAID_ORDER_TTL_S=str(UNPAID_TTL_S),
        ORDERFLOW_EXPIRY_SWEEP_INTERVAL_S="0.5",
        # The tests poll and burst far above a client's fair share; the limiter has its tests.
        ORDERFLOW_RATE_LIMITS='{"read": "100000/1", "write": "10000/1", "orders": "10000/1"}',
    )


def own_gateway() -> dict[str, str]:
    """Environment that points a system at a payment gateway port of its own."""
    return {"ORDERFLOW_GATEWAY_URL": f"http://127.0.0.1:{free_port()}"}


@pytest.fixture(scope="session")
def e2e_settings(settings: Settings) -> Settings:
    """This run's settings with a database and queues of their own: the running system must
    not see (or process) the rows other tests write."""
    return settings_apart(settings, "e2e")


@pytest.fixture(scope="session")
async def e2e_database(e2e_settings: Settings) -> AsyncIterator[str]:
    async with fresh_database(e2e_settings.dsn()) as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def pool(e2e_settings: Settings, e2e_database: str) -> AsyncIterator[asyncpg.Pool]:
    """The e2e database (overrides the shared test database for these tests)."""
    async with open_pool(e2e_settings, max_size=5) as pool:
        yield pool


@pytest.fixture(scope="session")
def system(
    e2e_settings: Settings, e2e_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``orderflow up`` (two workers) on a free port; yields the base URL; stopped with SIGTERM."""
    port = free_port()
    log = tmp_path_factory.mktemp("e2e") / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orderflow.entrypoints.cli",
                "up",
                "--port",
                str(port),
                "--autopilot-delay",
                str(AUTOPILOT_DELAY_S),
                # Two competing workers, as deployed: their batches meet on the same rows.
                "--workers",
                "2",
                "--metrics-port",
                "0",
            ],
            env=process_env(e2e_settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"orderflow up exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"orderflow up did not become ready:\n{log.read_text()[-3000:]}")
    try:
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("orderflow up did not stop within 20 s of SIGTERM")


@pytest.fixture
async def http(system: str, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running system, holding an admin key."""
    headers = {"Authorization": f"Bearer {await bearer(pool, Role.ADMIN)}"}
    async with httpx.AsyncClient(base_url=system, timeout=10, headers=headers) as client:
        yield client


async def wait_for_status(
    client: httpx.AsyncClient, order_id: str, statuses: set[str], *, timeout_s: float = 30
) -> dict[str, object]:
    """Poll an order until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        body = (await client.get(f"/api/v1/orders/{order_id}")).json()
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} stuck in {body.get('status')}: {body}")

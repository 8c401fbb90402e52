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

import httpx
import pytest

from orderflow.settings import Settings

AUTOPILOT_DELAY_S = 0.4
UNPAID_TTL_S = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a child process of this test run."""
    return {
        **os.environ,
        "ORDERFLOW_ENVIRONMENT": "test",
        "ORDERFLOW_DATABASE_URL": settings.dsn(),
        "ORDERFLOW_EXCHANGE": settings.exchange,
        "ORDERFLOW_QUEUE_PREFIX": settings.queue_prefix,
        "ORDERFLOW_PAYMENT_SLOW_DELAY_S": "0.2",
        "ORDERFLOW_LOG_LEVEL": "WARNING",
        "ORDERFLOW_UNPAID_ORDER_TTL_S": str(UNPAID_TTL_S),
        "ORDERFLOW_EXPIRY_SWEEP_INTERVAL_S": "0.5",
        **extra,
    }


@pytest.fixture(scope="session")
def system(
    settings: Settings, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``orderflow up`` on a free port; yields the base URL; stopped with SIGTERM."""
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
                "--metrics-port",
                "0",
            ],
            env=process_env(settings),
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
async def http(system: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system, timeout=10) as client:
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

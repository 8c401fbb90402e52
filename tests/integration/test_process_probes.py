"""The relay's and the worker's probes on their metrics port: /healthz (alive) and /readyz
(connected to the broker), served over real HTTP from the process's ops thread, and by a real
worker process."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import httpx
import pytest

from orderflow.kernel.process import broker_readiness, serve_metrics
from orderflow.settings import Settings
from tests.conftest import child_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_readyz_follows_the_broker_connection_and_healthz_stays_apart() -> None:
    connected = asyncio.Event()
    started: list[asyncio.Event] = []
    port = _free_port()
    ready = broker_readiness(lambda: started[0] if started else None)
    serve_metrics(port, process="worker", health=lambda: {"status": "ok"}, ready=ready)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        before = await http.get("/readyz")
        assert (before.status_code, before.json()) == (
            503,
            {"status": "not_ready", "broker": "down"},
        )
        started.append(connected)
        assert (await http.get("/readyz")).status_code == 503
        connected.set()
        after = await http.get("/readyz")
        assert (after.status_code, after.json()) == (200, {"status": "ready", "broker": "up"})
        connected.clear()
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200


@pytest.mark.usefixtures("database")
async def test_a_worker_process_is_ready_once_its_consumers_are_connected(
    settings: Settings,
) -> None:
    port = _free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "orderflow.entrypoints.cli", "worker", "--metrics-port", str(port)],
        env=child_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                try:
                    answer = await http.get("/readyz")
                    if answer.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the worker never became ready"
                await asyncio.sleep(0.2)
            assert answer.json() == {"status": "ready", "broker": "up"}
            assert (await http.get("/healthz")).status_code == 200
    finally:
        worker.terminate()
        worker.wait(timeout=20)

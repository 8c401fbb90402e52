"""Order streams against the real processes: a client that drops its connection at random
points and resumes with Last-Event-ID, over two API replicas, one of them killed and started
again meanwhile, ends with every entry of its orders exactly once and in order."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from orderflow.domain.access import Role
from orderflow.settings import Settings
from tests.e2e.conftest import free_port, process_env, wait_for_status
from tests.factories import make_customer, make_product, place_order
from tests.integration.conftest import bearer
from tests.sse import frames

pytestmark = pytest.mark.e2e

ORDERS = 8
TERMINAL = {"delivered", "cancelled"}  # pm_decline orders expire unpaid


class Replica:
    """A second ``orderflow api`` on the system's database, to kill and start again."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "orderflow.entrypoints.cli",
                    "api",
                    "--port",
                    str(self.port),
                ],
                env=process_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the replica did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def replica(e2e_settings: Settings, system: str, tmp_path: Path) -> Iterator[Replica]:
    replica = Replica(e2e_settings, tmp_path / "replica.log")
    replica.start()
    yield replica
    if replica.proc is not None and replica.proc.poll() is None:
        replica.proc.terminate()
        replica.proc.wait(timeout=20)


async def test_a_client_that_keeps_dropping_its_stream_sees_every_entry_once_and_in_order(
    http: httpx.AsyncClient, pool: asyncpg.Pool, system: str, replica: Replica
) -> None:
    rng = random.Random(23)
    product = await make_product(http, stock=1000)
    customer = await make_customer(http)
    other = await make_customer(http)
    token = await bearer(pool, Role.CUSTOMER, customer["id"])
    headers = {"Authorization": f"Bearer {token}"}
    received: list[dict[str, object]] = []
    ids: list[int] = []
    last_id: str | None = None
    connections = 0

    async def session(base: str) -> None:
        """One connection: read until a random moment or a random number of frames."""
        nonlocal last_id, connections
        connections += 1
        resume = {"Last-Event-ID": last_id} if last_id is not None else {}
        want = rng.randint(1, 6)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
            try:
                async with (
                    asyncio.timeout(rng.uniform(0.05, 1.5) if last_id else 10),
                    client.stream("GET", "/api/v1/orders/stream", headers=resume) as response,
                ):
                    assert response.status_code == 200, await response.aread()
                    async for frame in frames(response):
                        if frame.comment:
                            continue
                        if frame.id is not None:
                            last_id = frame.id
                        if frame.event == "ready":
                            assert not received, "ready comes first, and only without an id"
                            return
                        if frame.event == "message":
                            received.append(frame.json())
                            ids.append(int(frame.id or 0))
                            want -= 1
                            if want == 0:
                                return
            except (TimeoutError, httpx.TransportError):
                return  # dropped (by us, or by the replica's death)

    # Connect first: the stream starts "now", before the orders exist.
    await session(system)
    assert last_id is not None
    placed = []
    for n in range(ORDERS):
        mine = n % 2 == 0
        placed.append(
            await place_order(
                http,
                customer_id=customer["id"] if mine else other["id"],
                lines=[(product["id"], 1)],
                payment_token="pm_approve" if n % 4 else "pm_decline",
            )
        )
    my_orders = [o["id"] for n, o in enumerate(placed) if n % 2 == 0]
    killed_at = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        base = rng.choice([system, replica.url])
        if connections == 6 and not killed_at:
            replica.kill()  # mid-run: its clients are cut off, its memory is gone
            killed_at = connections
            await session(system)
            replica.start()
            continue
        await session(base)
        done = [
            (await http.get(f"/api/v1/orders/{o}")).json()["status"] in TERMINAL for o in my_orders
        ]
        expected = await pool.fetchval(
            "SELECT count(*) FROM order_timeline WHERE order_id = ANY($1::uuid[])",
            [uuid.UUID(o) for o in my_orders],
        )
        if all(done) and connections >= 12 and len(received) >= expected:
            break
    for order in my_orders:
        await wait_for_status(http, order, TERMINAL)

    rows = await pool.fetch(
        "SELECT id, order_id, event_id FROM order_timeline WHERE order_id = ANY($1::uuid[]) "
        "ORDER BY id",
        [uuid.UUID(o) for o in my_orders],
    )
    assert killed_at, "the replica was never killed"
    assert connections >= 12
    # Every entry of the customer's orders exactly once, nothing of another customer's ...
    assert sorted(ids) == sorted(r["id"] for r in rows)
    assert len(ids) == len(set(ids))
    assert {e["order_id"] for e in received} == set(my_orders)
    # ... and, per order, in the timeline's order.
    for order in my_orders:
        got = [e["event_id"] for e in received if e["order_id"] == order]
        want = [str(r["event_id"]) for r in rows if str(r["order_id"]) == order]
        assert got == want, order

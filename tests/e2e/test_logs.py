"""No secret in any log, in any mode, and one error is one bounded record.

The real processes (``orderflow up``: api, relay, worker, autopilot) run on a database of
their own whose URL carries a password. Failures are forced in the database itself (a
trigger that raises), so that the API answers 500 and the worker dead-letters a payment:
the two places whose tracebacks used to carry the caller's key and the payment token in
their local variables. Then every process's output is searched for each secret.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from orderflow.domain.access import Role
from orderflow.settings import Settings
from tests.e2e.conftest import free_port, own_gateway, process_env
from tests.e2e.processes import own_database, start, stop, wait_ready
from tests.factories import make_customer, make_product
from tests.integration.conftest import bearer

DB_PASSWORD = "db-pass-4f9c1e"  # trust authentication accepts it; it must never be printed
TOKEN = "pm_approve"
FORCED = "forced failure for the log test"


def _with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':')[0]}:{password}@{host}"))


async def _fail_inserts_into(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(
        f"""
        CREATE OR REPLACE FUNCTION log_test_boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{FORCED}'; END $$;
        CREATE TRIGGER log_test_boom BEFORE INSERT ON {table}
            FOR EACH ROW EXECUTE FUNCTION log_test_boom();
        """
    )


async def _wait_for(path: Path, text: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in the logs:\n{path.read_text()[-3000:]}")


@pytest.fixture(params=["development", "production"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def logged_system(
    mode: str, settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[str, asyncpg.Pool, Path]]:
    """``orderflow up`` in ``mode`` on a database of its own; yields (url, pool, log path)."""
    async with own_database(settings, "logs") as plain_dsn:
        dsn = _with_password(plain_dsn, DB_PASSWORD)
        log = tmp_path / "up.log"
        port = free_port()
        env = (
            process_env(settings)
            | own_gateway()
            | {
                "ORDERFLOW_DATABASE_URL": dsn,
                "ORDERFLOW_ENVIRONMENT": mode,
                "ORDERFLOW_LOG_LEVEL": "INFO",
                "ORDERFLOW_EXCHANGE": f"{settings.exchange}.logs",
                "ORDERFLOW_QUEUE_PREFIX": f"{settings.queue_prefix}.logs",
            }
        )
        env.pop("ORDERFLOW_LOG_JSON", None)  # the mode decides
        proc = start(["up", "--port", str(port), "--metrics-port", "0"], env, log)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_ready([f"{base}/readyz"], [proc], log)
            yield base, pool, log
        finally:
            await pool.close()
            stop([proc])


async def test_a_forced_error_leaves_no_secret_in_any_log(
    logged_system: tuple[str, asyncpg.Pool, Path],
) -> None:
    base, pool, log = logged_system
    admin_key = await bearer(pool, Role.ADMIN)
    async with httpx.AsyncClient(
        base_url=base, timeout=10, headers={"Authorization": f"Bearer {admin_key}"}
    ) as admin:
        product = await make_product(admin)
        customer = await make_customer(admin)
    customer_key = await bearer(pool, Role.CUSTOMER, customer["id"])
    order = {"lines": [{"product_id": product["id"], "quantity": 1}], "payment_token": TOKEN}
    async with httpx.AsyncClient(
        base_url=base,
        timeout=10,
        headers={"Authorization": f"Bearer {customer_key}"},
        cookies={"orderflow_admin": "session-cookie-value-3b8e"},
    ) as client:
        # The worker: its payment step fails on a bug-like error and is dead-lettered, with a
        # traceback, while the delivery holds the payment token.
        async with pool.acquire() as conn:
            await _fail_inserts_into(conn, "payments")
        placed = await client.post("/api/v1/orders", json=order)
        assert placed.status_code == 201, placed.text
        await _wait_for(log, "delivery_dead_lettered")
        # The API: the statement that stores an order fails; the caller gets a plain 500.
        async with pool.acquire() as conn:
            await _fail_inserts_into(conn, "orders")
        failed = await client.post("/api/v1/orders", json=order)
        assert failed.status_code == 500
        assert failed.headers["content-type"] == "application/problem+json"
        assert FORCED not in failed.text
        assert "Traceback" not in failed.text
        await _wait_for(log, "unhandled_error")
        # A bogus key of the right shape, and one in a URL's password, are not logged either.
        bogus = "ofk_0123456789ab_" + "x" * 43
        refused = await client.get("/api/v1/orders", headers={"Authorization": f"Bearer {bogus}"})
        assert refused.status_code == 401

    output = log.read_text(errors="replace")
    assert FORCED in output  # the errors were logged...
    for secret in (
        customer_key.split("_", 2)[2],  # the secret may hold "_" itself
        admin_key.split("_", 2)[2],
        "x" * 43,
        TOKEN,
        DB_PASSWORD,
        "session-cookie-value-3b8e",
    ):
        assert secret not in output, f"a secret is in the logs: {secret[:6]}…"
    # ... once each, as one record of bounded size, without local variables.
    assert output.count("unhandled_error") == 1
    assert "Exception in ASGI application" not in output
    assert "locals" not in output.lower()
    assert len(output) < 300_000, f"{len(output)} characters of logs"

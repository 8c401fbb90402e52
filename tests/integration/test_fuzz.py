"""Schemathesis over the API's own OpenAPI document, as an admin and as a customer.

A real ``orderflow api`` process on a database of its own; schemathesis generates requests
from every operation's documented parameters and bodies (its examples, then random ones) and
fails on any 5xx, on a status code the operation does not document, on a content type it does
not document, and on a body that does not match the documented schema.

Bounded for CI: a few examples per operation and a fixed seed, so a run costs ~20 s. Left
out: the live streams (server-sent events never end, so there is no response to check; they
have their own tests) and the back office under ``/admin``, which authenticates with a
session cookie and a CSRF token, not with the bearer keys this test holds.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from orderflow.domain.access import Role
from orderflow.settings import Settings
from tests.conftest import child_env
from tests.e2e.conftest import free_port
from tests.e2e.processes import own_database, start, stop, wait_ready
from tests.integration.conftest import bearer

EXAMPLES_PER_OPERATION = 3
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance," + (
    "response_schema_conformance"
)
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


@pytest.fixture(scope="module")
async def served(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """``orderflow api`` on a database of its own (what it creates stays there)."""
    async with own_database(settings, "fuzz") as dsn:
        port = free_port()
        env = child_env(
            settings,
            ORDERFLOW_DATABASE_URL=dsn,
            ORDERFLOW_RATE_LIMITS='{"read": "100000/1", "write": "100000/1", '
            '"orders": "100000/1", "auth": "100000/1"}',
        )
        log = tmp_path_factory.mktemp("fuzz") / "api.log"
        api = start(["api", "--port", str(port)], env, log)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_ready([f"{base}/healthz"], [api], log)
            yield base, pool
        finally:
            await pool.close()
            stop([api])


@pytest.mark.parametrize("role", [Role.ADMIN, Role.CUSTOMER])
async def test_every_generated_request_is_answered_as_documented(
    role: Role, served: tuple[str, asyncpg.Pool]
) -> None:
    base, pool = served
    customer = None
    if role is Role.CUSTOMER:
        customer = uuid.uuid4()
        await pool.execute(
            "INSERT INTO customers (id, email, name) VALUES ($1, $2, 'Fuzz')",
            customer,
            f"{customer.hex}@example.com",
        )
    key = await bearer(pool, role, str(customer) if customer else None)
    command = [
        *(SCHEMATHESIS, "run", f"{base}/openapi.json"),
        *("--header", f"Authorization: Bearer {key}", "--checks", CHECKS),
        *("--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", "18"),
        *("--phases", "examples,fuzzing", "--exclude-path-regex", "^/admin|/stream$"),
        *("--no-shrink", "--generation-database", "none", "--request-timeout", "10"),
        *("--max-failures", "20"),
    ]
    run = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=300
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert " passed" in report  # it did generate and send requests

"""``orderflow keys create|list|revoke`` and the demo keys of ``orderflow seed``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from orderflow.settings import Settings
from tests.factories import make_customer

ORDERFLOW = str(Path(sys.executable).with_name("orderflow"))


async def orderflow(settings: Settings, *args: str, expect: int = 0) -> list[str]:
    env = {**os.environ, "ORDERFLOW_DATABASE_URL": settings.dsn(), "ORDERFLOW_LOG_LEVEL": "ERROR"}
    proc = await asyncio.create_subprocess_exec(
        ORDERFLOW, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == expect, err.decode()
    return out.decode().splitlines()


@pytest.fixture
def anonymous(api_transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=api_transport, base_url="http://test")


async def test_created_key_is_the_last_line_and_works_until_revoked(
    settings: Settings, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    customer = await make_customer(client)
    lines = await orderflow(
        settings, "keys", "create", "--role", "customer", "--customer", customer["id"]
    )
    key = lines[-1]
    assert key.startswith("ofk_")
    auth = {"Authorization": f"Bearer {key}"}
    mine = await anonymous.get(f"/api/v1/customers/{customer['id']}", headers=auth)
    assert mine.status_code == 200

    prefix = key.split("_")[1]
    listed = await orderflow(settings, "keys", "list")
    assert any(line.startswith(prefix) and customer["id"] in line for line in listed)
    assert not any(key in line for line in listed)  # the secret is never shown again

    revoked = await orderflow(settings, "keys", "revoke", prefix)
    assert "revoked customer key" in revoked[-1]
    assert not any(line.startswith(prefix) for line in await orderflow(settings, "keys", "list"))


@pytest.mark.parametrize("named_as", ["ofk_prefix", "whole_key"])
async def test_revoke_accepts_the_prefix_with_ofk_or_the_whole_key(
    settings: Settings, named_as: str
) -> None:
    key = (await orderflow(settings, "keys", "create", "--role", "staff"))[-1]
    prefix = key.split("_")[1]
    ident = f"ofk_{prefix}" if named_as == "ofk_prefix" else key

    revoked = await orderflow(settings, "keys", "revoke", ident)

    assert revoked[-1].startswith(f"revoked staff key {prefix};")
    assert not any(line.startswith(prefix) for line in await orderflow(settings, "keys", "list"))


async def test_bad_key_requests_fail_with_a_message(settings: Settings) -> None:
    await orderflow(settings, "keys", "create", "--role", "customer", expect=1)
    await orderflow(settings, "keys", "create", "--role", "root", expect=2)
    await orderflow(settings, "keys", "revoke", "nosuchprefix", expect=1)
    await orderflow(settings, "keys", "revoke", "ofk_000000000000", expect=1)


async def test_seed_prints_working_demo_keys(
    settings: Settings, anonymous: httpx.AsyncClient
) -> None:
    lines = await orderflow(settings, "seed", "--products", "2")
    keys = {
        line.split(":")[0]: line.split()[-1]
        for line in lines
        if line.startswith("demo") and "key" in line
    }
    admin, customer = keys["demo admin key"], keys["demo customer key"]
    listing = await anonymous.get("/api/v1/orders", headers={"Authorization": f"Bearer {admin}"})
    assert listing.status_code == 200
    forbidden = await anonymous.post(
        "/api/v1/customers",
        json={"email": "x@example.com", "name": "X"},
        headers={"Authorization": f"Bearer {customer}"},
    )
    assert forbidden.status_code == 403

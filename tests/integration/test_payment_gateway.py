"""The payment gateway as a service of its own (``orderflow gateway``): its API, its durable
idempotency keys (across its own restart and the worker's), its ledger, and its webhooks to the
API arriving before, after or twice relative to the synchronous answer."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from orderflow.bench.servers import free_port
from orderflow.domain import webhooks as signing
from orderflow.entrypoints.api.routers.payment_gateway import PATH
from orderflow.kernel.batching import Lookup
from orderflow.kernel.handlers import CallStep, Registry
from orderflow.kernel.uow import unit_of_work
from orderflow.operations import Check, audit_gateway_ledger
from orderflow.payments import store
from orderflow.payments.gateway import Authorization, AuthorizationStatus
from orderflow.payments.provider import HttpGateway
from orderflow.payments.steps import call_authorize, settle_authorizations
from orderflow.settings import Settings
from tests.conftest import child_env
from tests.factories import make_customer, make_product, place_order
from tests.integration.saga_support import _money, _payment_initiated, _processed, _run


def _gateway_client(url: str, settings: Settings) -> httpx.AsyncClient:
    key = settings.gateway_api_key.get_secret_value()
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"})


async def _ledger(http: httpx.AsyncClient, order_id: str) -> list[str]:
    entries = (await http.get("/v1/ledger", params={"limit": 10000})).json()["entries"]
    return [e["kind"] for e in entries if e["order_id"] == order_id]


async def _authorize(
    http: httpx.AsyncClient, key: str, token: str = "pm_approve", amount: int = 100
) -> httpx.Response:
    body = {"amount": amount, "currency": "EUR", "payment_method": token, "metadata": {}}
    return await http.post("/v1/payment_intents", json=body, headers={"Idempotency-Key": key})


@pytest.fixture
async def gateway_http(
    payment_gateway: str, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    async with _gateway_client(payment_gateway, settings) as http:
        yield http


async def test_the_gateway_refuses_bad_requests_with_problems_and_moves_no_money(
    gateway_http: httpx.AsyncClient, payment_gateway: str
) -> None:
    async with httpx.AsyncClient(base_url=payment_gateway) as anonymous:
        refused = await anonymous.post("/v1/payment_intents", json={})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    bad = await gateway_http.post(
        "/v1/payment_intents",
        json={"amount": -1, "currency": "euro", "payment_method": ""},
        headers={"Idempotency-Key": "k"},
    )
    assert bad.status_code == 422
    assert {"type", "title", "status", "detail"} <= set(bad.json())
    no_key = await gateway_http.post(
        "/v1/payment_intents", json={"amount": 1, "currency": "EUR", "payment_method": "pm_approve"}
    )
    assert no_key.status_code == 422
    key = f"k-{uuid.uuid4()}"
    assert (await _authorize(gateway_http, key, amount=100)).status_code == 200
    reused = await _authorize(gateway_http, key, amount=999)  # the same key, another request
    assert reused.status_code == 422
    assert reused.json()["type"].endswith("idempotency_key_reused")
    missing = await gateway_http.post(
        "/v1/payment_intents/pi_nope/capture", headers={"Idempotency-Key": key}
    )
    assert missing.status_code == 404


async def test_authorize_capture_void_and_refund_move_money_once_each(
    gateway_http: httpx.AsyncClient,
) -> None:
    key = f"k-{uuid.uuid4()}"
    intent = (await _authorize(gateway_http, key)).json()
    assert intent["status"] == "requires_capture"
    assert (await _authorize(gateway_http, key)).json()["id"] == intent["id"]  # the same one
    path = f"/v1/payment_intents/{intent['id']}"
    captured = await gateway_http.post(f"{path}/capture", headers={"Idempotency-Key": "c1"})
    assert captured.json()["status"] == "captured"
    again = await gateway_http.post(f"{path}/capture", headers={"Idempotency-Key": "c2"})
    assert again.json()["amount_captured"] == 100  # captured once, whatever the key
    void = await gateway_http.post(f"{path}/void", headers={"Idempotency-Key": "v1"})
    assert void.status_code == 409
    assert void.json()["payment_intent"]["status"] == "captured"
    refund = {"payment_intent": intent["id"]}
    first = await gateway_http.post("/v1/refunds", json=refund, headers={"Idempotency-Key": "r1"})
    same = await gateway_http.post("/v1/refunds", json=refund, headers={"Idempotency-Key": "r1"})
    other = await gateway_http.post("/v1/refunds", json=refund, headers={"Idempotency-Key": "r2"})
    assert first.status_code == same.status_code == 200
    assert first.json()["id"] == same.json()["id"]
    assert other.status_code == 409  # a second refund under another key is refused
    entries = (await gateway_http.get("/v1/ledger", params={"limit": 10000})).json()["entries"]
    kinds = [e["kind"] for e in entries if e["intent_id"] == intent["id"]]
    assert kinds == ["authorize", "capture", "refund"]


async def test_pm_flaky_fails_twice_under_one_key_then_is_authorized(
    gateway_http: httpx.AsyncClient,
) -> None:
    key = f"k-{uuid.uuid4()}"
    answers = [await _authorize(gateway_http, key, token="pm_flaky") for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["retry-after"] == "1"
    assert answers[2].json()["status"] == "requires_capture"


async def test_idempotency_keys_survive_a_kill_of_the_gateway_process(
    settings: Settings, database: str
) -> None:
    port = free_port()
    env = child_env(settings, ORDERFLOW_GATEWAY_PORT=str(port), ORDERFLOW_LOG_LEVEL="WARNING")
    command = [sys.executable, "-m", "orderflow.entrypoints.cli", "gateway"]
    url = f"http://127.0.0.1:{port}"

    async def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, env=env, start_new_session=True)
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient(base_url=url) as probe:
            while True:
                try:
                    if (await probe.get("/healthz")).status_code == 200:
                        return proc
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, "the gateway exited"
                assert time.monotonic() < deadline, "the gateway did not start"
                await asyncio.sleep(0.1)

    key = f"k-{uuid.uuid4()}"
    proc = await start()
    try:
        async with _gateway_client(url, settings) as http:
            first = (await _authorize(http, key)).json()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = await start()
        async with _gateway_client(url, settings) as http:
            again = (await _authorize(http, key)).json()
            entries = (await http.get("/v1/ledger", params={"limit": 10000})).json()["entries"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert again["id"] == first["id"]
    assert [e["kind"] for e in entries if e["intent_id"] == first["id"]] == ["authorize"]


async def test_a_restarted_worker_authorizes_under_the_same_key_and_is_not_charged_twice(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    registry: Registry,
    settings: Settings,
    gateway_http: httpx.AsyncClient,
) -> None:
    order, delivery = await _payment_initiated(client, pool, registry, price=300)
    spec = registry.get("payments.charge")
    assert isinstance(spec, CallStep)
    # The worker that called the gateway died before recording the answer; the redelivery
    # reaches a new worker (a new HTTP client) that calls again under the payment's key.
    references = []

    async def fetch(ids: list[uuid.UUID]) -> dict[uuid.UUID, store.Payment]:
        return await store.get_many(pool, ids)

    for _ in range(2):
        gateway = HttpGateway.from_settings(settings)
        try:
            answer = await call_authorize(
                delivery, gateway=gateway, payment_of=Lookup(fetch, max_batch=10), timeout_s=5
            )
        finally:
            await gateway.aclose()
        assert answer is not None
        references.append(answer[1].reference)
    assert references[0] == references[1]
    assert await _ledger(gateway_http, order["id"]) == ["authorize"]
    # The intent carries the order and the payment as a JSON object (audits query it).
    stored = await pool.fetchrow(
        "SELECT metadata->>'order_id' AS order_id, metadata->>'payment_id' AS payment_id "
        "FROM gateway.intents WHERE id = $1",
        references[0],
    )
    assert stored["order_id"] == order["id"]
    assert stored["payment_id"] == str(delivery.event.payment_id)  # type: ignore[attr-defined]


def _signed(
    settings: Settings, intent: dict[str, Any], *, at: int | None = None, secret: str | None = None
) -> tuple[bytes, dict[str, str]]:
    webhook_id = f"evt_{uuid.uuid4().hex[:12]}"
    body = json.dumps(
        {"id": webhook_id, "type": "payment_intent.authorized", "data": intent}
    ).encode()
    key = secret or settings.gateway_webhook_secret.get_secret_value()
    headers = signing.headers([key], webhook_id, at or int(time.time()), body)
    return body, {**headers, "content-type": "application/json"}


async def _slow_order(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    registry: Registry,
    gateway_http: httpx.AsyncClient,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An order paid with pm_slow: the worker's call was answered "processing", and the
    gateway has authorized it since (its own webhook may be on its way); that intent."""
    order, delivery = await _payment_initiated(client, pool, registry, price=700, token="pm_slow")
    spec = registry.get("payments.charge")
    assert isinstance(spec, CallStep)
    assert await spec.call(delivery) is None  # "processing": nothing to record yet
    entries = (await gateway_http.get("/v1/ledger", params={"limit": 10000})).json()["entries"]
    payment_id = await pool.fetchval(
        "SELECT id FROM payments WHERE order_id = $1", uuid.UUID(order["id"])
    )
    intent_id = await pool.fetchval(
        "SELECT object_id FROM gateway.idempotency_keys WHERE key = $1", f"authorize:{payment_id}"
    )
    assert intent_id
    assert not [e for e in entries if e["intent_id"] == intent_id]  # nothing moved yet
    deadline = time.monotonic() + 10
    while (intent := (await gateway_http.get(f"/v1/payment_intents/{intent_id}")).json())[
        "status"
    ] == "processing":  # authorized after the slow delay
        assert time.monotonic() < deadline, "the slow authorization never came through"
        await asyncio.sleep(0.02)
    assert intent["status"] == "requires_capture"
    return order, intent


async def test_a_webhook_before_the_synchronous_answer_settles_once_and_the_answer_is_dropped(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    registry: Registry,
    settings: Settings,
    gateway_http: httpx.AsyncClient,
) -> None:
    order, intent = await _slow_order(client, pool, registry, gateway_http)
    payment = await store.get(pool, uuid.UUID(intent["metadata"]["payment_id"]))
    assert payment is not None
    # The worker's view of it, read while it was pending, before any webhook.
    pending = dataclasses.replace(payment, status="pending", gateway_reference=None)
    body, headers = _signed(settings, intent)
    assert (await client.post(PATH, content=body, headers=headers)).status_code == 204
    # The worker's answer, read while pending and recorded after the webhook (a slow call
    # that finally returned), records nothing.
    late = Authorization(AuthorizationStatus.AUTHORIZED, intent["id"])
    async with unit_of_work(pool) as uow:
        await settle_authorizations(uow, [(uuid.UUID(order["id"]), pending, late, None)])
    assert await _processed(pool, order) == 1
    done = await _run(client, pool, registry, order)
    assert done["status"] == "delivered"
    assert await _money(pool, order["id"]) == {"authorize": 700, "capture": 700}


async def test_a_webhook_after_the_answer_or_twice_changes_nothing(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    registry: Registry,
    settings: Settings,
    gateway_http: httpx.AsyncClient,
) -> None:
    order, intent = await _slow_order(client, pool, registry, gateway_http)
    body, headers = _signed(settings, intent)
    for _ in range(2):  # twice: the second copy is answered 204 and changes nothing
        assert (await client.post(PATH, content=body, headers=headers)).status_code == 204
    assert await _processed(pool, order) == 1
    done = await _run(client, pool, registry, order)
    assert done["status"] == "delivered"
    # After the answer was recorded (and the order delivered): still nothing.
    again_body, again_headers = _signed(settings, intent)
    assert (await client.post(PATH, content=again_body, headers=again_headers)).status_code == 204
    assert await _processed(pool, order) == 1
    assert await _money(pool, order["id"]) == {"authorize": 700, "capture": 700}


async def test_unsigned_stale_or_foreign_webhooks_are_refused_and_change_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry, settings: Settings
) -> None:
    # A payment still pending, never sent to the gateway: a forged authorization of it.
    order, _ = await _payment_initiated(client, pool, registry, price=500)
    payment_id = await pool.fetchval(
        "SELECT id FROM payments WHERE order_id = $1", uuid.UUID(order["id"])
    )
    forged = {
        "id": "pi_forged",
        "status": "requires_capture",
        "metadata": {"order_id": order["id"], "payment_id": str(payment_id)},
    }
    body, headers = _signed(settings, forged, secret=signing.new_secret())
    assert (await client.post(PATH, content=body, headers=headers)).status_code == 401
    body, headers = _signed(settings, forged, at=int(time.time()) - 3600)
    assert (await client.post(PATH, content=body, headers=headers)).status_code == 401
    unsigned = await client.post(PATH, content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 422  # the signature headers are required
    foreign = {**forged, "metadata": {"order_id": str(uuid.uuid4()), "payment_id": "x"}}
    body, headers = _signed(settings, foreign)
    refused = await client.post(PATH, content=body, headers=headers)
    assert refused.status_code in (404, 422)
    assert refused.headers["content-type"] == "application/problem+json"
    status = await pool.fetchval("SELECT status FROM payments WHERE id = $1", payment_id)
    assert status == "pending"
    assert await _processed(pool, order) == 0


async def test_an_order_short_of_stock_is_authorized_then_voided_and_never_captured(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    registry: Registry,
    gateway_http: httpx.AsyncClient,
) -> None:
    product = await make_product(client, price=600, stock=3)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 5)], payment_token="pm_approve"
    )
    done = await _run(client, pool, registry, order)
    assert done["status"] == "cancelled"
    assert await _ledger(gateway_http, order["id"]) == ["authorize", "void"]
    assert await _money(pool, order["id"]) == {"authorize": 600 * 5, "void": 600 * 5}


async def test_the_audit_finds_our_payments_and_the_gateways_ledger_equal_and_names_a_gap(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    registry: Registry,
    gateway_http: httpx.AsyncClient,
) -> None:
    product = await make_product(client, price=450, stock=2)
    customer = await make_customer(client)
    orders = [
        await place_order(
            client, customer_id=customer["id"], lines=[(product["id"], n)], payment_token=token
        )
        for n, token in ((1, "pm_approve"), (5, "pm_approve"), (1, "pm_flaky"))
    ]
    for order in orders:
        await _run(client, pool, registry, order)
    ids = [uuid.UUID(o["id"]) for o in orders]
    assert await audit_gateway_ledger(pool, gateway_http, only=ids) == []
    # A capture the gateway made that our rows do not show (lost on its way back).
    await pool.execute(
        "DELETE FROM payment_transactions WHERE order_id = $1 AND kind = 'capture'", ids[0]
    )
    found = await audit_gateway_ledger(pool, gateway_http, only=ids)
    assert [(v.check, v.order_id, v.detail) for v in found] == [
        (Check.GATEWAY_LEDGER, ids[0], "capture: gateway 1, ours 0")
    ]

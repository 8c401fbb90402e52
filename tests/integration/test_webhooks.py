"""Webhook subscriptions and deliveries: the workers' delivery duty against real HTTP
receivers, PostgreSQL and the order feed. Every delivery the receivers accept is verified
with the example code of docs/webhooks.md, run as it is written there."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orderflow.domain import webhooks as signing
from orderflow.domain.saga import RECIPIENTS
from orderflow.notifications import webhooks
from orderflow.notifications.webhooks import Policy
from tests.factories import make_customer, make_product, place_order
from tests.http_server import serving
from tests.integration.conftest import ClientFor

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
_EXAMPLE = re.compile(
    r"<!-- BEGIN EXAMPLE: verify -->\n```python\n(?P<code>.*?)```\n<!-- END EXAMPLE -->", re.S
)


def docs_example() -> dict[str, Any]:
    """The verification example of docs/webhooks.md, executed: its ``verify`` and
    ``InvalidWebhook``."""
    found = _EXAMPLE.search(DOCS.read_text())
    assert found, "docs/webhooks.md lost its verification example"
    namespace: dict[str, Any] = {}
    exec(compile(found["code"], str(DOCS), "exec"), namespace)
    return namespace


EXAMPLE = docs_example()
verify: Callable[[str, dict[str, str], bytes], dict[str, Any]] = EXAMPLE["verify"]
InvalidWebhook: type[Exception] = EXAMPLE["InvalidWebhook"]


class Receiver:
    """A webhook endpoint: down (503) until ``up``, then verifies, deduplicates and keeps
    every delivery; ``answer`` overrides the status it gives."""

    def __init__(self) -> None:
        self.secret = ""
        self.up = asyncio.Event()
        self.answer: int | None = None
        self.accepted: list[dict[str, Any]] = []  # the payloads, first arrival of each id
        self.raw: list[tuple[dict[str, str], bytes]] = []
        self.ids: set[str] = set()
        self.copies = 0
        self.rejected = 0
        self.flaky: dict[str, int] = {}  # event type -> 503s for each delivery of it
        self._failed: dict[str, int] = {}

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not self.up.is_set():
            return Response(status_code=503, content=b"down for maintenance")
        if self.answer is not None:
            return Response(status_code=self.answer, content=b"scripted")
        failed = self._failed.get(headers.get("webhook-id", ""), 0)
        if failed < self.flaky.get(orjson.loads(body).get("type"), 0):
            self._failed[headers["webhook-id"]] = failed + 1
            return Response(status_code=503, content=b"flaky")
        try:
            payload = verify(self.secret, headers, body)
        except InvalidWebhook:
            self.rejected += 1
            return Response(status_code=400)
        self.raw.append((headers, body))
        if headers["webhook-id"] in self.ids:
            self.copies += 1
        else:
            self.ids.add(headers["webhook-id"])
            self.accepted.append(payload)
        return Response(status_code=204)


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    async with serving(app) as base:
        yield f"{base}/hook"


FAST = Policy(timeout_s=2, retry_base_s=0.1, retry_max_s=0.4, disable_after=1000)


@asynccontextmanager
async def delivering(pool: asyncpg.Pool, policy: Policy = FAST) -> AsyncIterator[None]:
    """The workers' webhook duty, running in this process."""
    stop, wake = asyncio.Event(), asyncio.Event()
    async with httpx.AsyncClient() as http:
        task = asyncio.create_task(
            webhooks.run_deliveries(pool, http, policy, stop, wake=wake, poll_interval_s=0.05)
        )
        try:
            yield
        finally:
            stop.set()
            await task


async def until(check: Callable[[], Any], timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.05)


async def _subscribe(http: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    response = await http.post("/api/v1/webhooks/subscriptions", json={"url": url, **body})
    assert response.status_code == 201, response.text
    created = dict(response.json())
    assert created["secret"].startswith("whsec_")
    return created


async def _timeline(pool: asyncpg.Pool, order_ids: list[str]) -> dict[str, list[str]]:
    rows = await pool.fetch(
        "SELECT order_id, event_id FROM order_timeline WHERE order_id = ANY($1::uuid[]) "
        "ORDER BY id",
        [uuid.UUID(o) for o in order_ids],
    )
    out: dict[str, list[str]] = {o: [] for o in order_ids}
    for r in rows:
        out[str(r["order_id"])].append(str(r["event_id"]))
    return out


async def test_a_receiver_down_for_a_while_gets_each_of_its_customers_events_once_in_order(
    client: httpx.AsyncClient, client_for: ClientFor, pool: asyncpg.Pool
) -> None:
    product = await make_product(client)
    mine, theirs = await make_customer(client), await make_customer(client)
    own = await client_for("customer", mine["id"])
    receiver = Receiver()
    # Once up, it still fails each order.created a few times: the order.cancelled behind it
    # must wait, or it would arrive first.
    receiver.flaky["order.created"] = 3
    async with receiving(receiver) as url, delivering(pool):
        sub = await _subscribe(own, url)
        receiver.secret = sub["secret"]
        orders = []
        for n in range(6):
            customer = mine if n % 3 else theirs
            order = await place_order(
                client, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=None
            )
            orders.append((customer, order))
            if n % 2:
                assert (
                    await client.post(f"/api/v1/orders/{order['id']}/cancel")
                ).status_code == 200
        my_orders = [o["id"] for c, o in orders if c is mine]
        want = await _timeline(pool, my_orders)
        total = sum(len(v) for v in want.values())

        async def attempted() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d "
                    "ON d.id = a.delivery_id WHERE d.subscription_id = $1 AND a.status_code = 503",
                    uuid.UUID(sub["id"]),
                )
                >= 3
            )

        await until(attempted)  # it was down, and the deliveries were tried meanwhile
        receiver.up.set()

        async def all_in() -> bool:
            return len(receiver.accepted) >= total

        await until(all_in)
        await asyncio.sleep(0.3)  # anything extra would have arrived by now
    assert receiver.rejected == 0
    assert len(receiver.accepted) == total
    retries = REGISTRY.get_sample_value("orderflow_webhook_attempts_total", {"outcome": "pending"})
    assert retries is not None
    assert retries >= 3
    assert {p["data"]["order_id"] for p in receiver.accepted} == set(my_orders)
    for order_id, events in want.items():
        got = [
            p["data"]["event_id"] for p in receiver.accepted if p["data"]["order_id"] == order_id
        ]
        assert got == events, order_id
    # The attempts are on record: the 503s with latency and excerpt, then the success.
    listed = await own.get(f"/api/v1/webhooks/subscriptions/{sub['id']}/deliveries")
    assert listed.status_code == 200
    assert all(d["status"] == "delivered" for d in listed.json())
    retried = [d for d in listed.json() if d["attempts"] > 1]
    assert retried
    detail = (await own.get(f"/api/v1/webhooks/deliveries/{retried[0]['id']}")).json()
    codes = [a["status_code"] for a in detail["attempts_made"]]
    assert codes[0] == 503
    assert codes[-1] == 204
    assert detail["attempts_made"][0]["response_excerpt"] in {"down for maintenance", "flaky"}
    assert all(a["latency_ms"] >= 0 for a in detail["attempts_made"])


async def test_a_tampered_or_replayed_delivery_is_rejected_by_the_docs_example(
    client: httpx.AsyncClient, client_for: ClientFor, pool: asyncpg.Pool
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    own = await client_for("customer", customer["id"])
    receiver = Receiver()
    receiver.up.set()
    async with receiving(receiver) as url, delivering(pool):
        sub = await _subscribe(own, url, event_types=["order.created"])
        receiver.secret = sub["secret"]
        await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])

        async def arrived() -> bool:
            return bool(receiver.raw)

        await until(arrived)
    headers, body = receiver.raw[0]
    assert verify(sub["secret"], headers, body)["type"] == "order.created"
    with pytest.raises(InvalidWebhook):
        verify(sub["secret"], headers, body.replace(b"order.created", b"order.shipped"))
    with pytest.raises(InvalidWebhook):
        verify(signing.new_secret(), headers, body)  # another subscription's secret
    # A captured message replayed later: correctly signed, but its timestamp is stale.
    stale = int(time.time()) - 600
    replayed = signing.headers([sub["secret"]], headers["webhook-id"], stale, body)
    with pytest.raises(InvalidWebhook, match="tolerance"):
        verify(sub["secret"], replayed, body)


async def test_a_rotated_secret_overlaps_and_a_failing_endpoint_is_disabled_until_enabled(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    receiver = Receiver()
    receiver.up.set()
    policy = Policy(timeout_s=2, retry_base_s=0.05, retry_max_s=0.1, disable_after=3)
    async with receiving(receiver) as url, delivering(pool, policy):
        sub = await _subscribe(client, url, partner="warehouse", description="test warehouse")
        assert sub["event_types"] == ["inventory.checked", "inventory.released"]
        sub = await _subscribe(client, url, customer_id=customer["id"])
        old = sub["secret"]
        rotated = await client.post(f"/api/v1/webhooks/subscriptions/{sub['id']}/rotate-secret")
        assert rotated.status_code == 200
        receiver.secret = rotated.json()["secret"]
        assert receiver.secret != old
        receiver.answer = 500
        order = await place_order(
            client, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=None
        )

        async def disabled() -> bool:
            got = await client.get(f"/api/v1/webhooks/subscriptions/{sub['id']}")
            return got.json()["enabled"] is False

        await until(disabled)
        # Disabled: nothing more is attempted, the delivery waits.
        await client.post(f"/api/v1/orders/{order['id']}/cancel")
        await asyncio.sleep(0.3)
        assert receiver.accepted == []
        receiver.answer = None
        enabled = await client.post(f"/api/v1/webhooks/subscriptions/{sub['id']}/enable")
        assert enabled.json()["enabled"] is True

        async def both() -> bool:
            return len(receiver.accepted) == 2

        await until(both)
        assert [p["type"] for p in receiver.accepted] == ["order.created", "order.cancelled"]
        # Signed with the new secret and, during the overlap, the old one as well.
        headers, body = receiver.raw[-1]
        assert len(headers["webhook-signature"].split(" ")) == 2
        assert verify(old, headers, body) == verify(receiver.secret, headers, body)
        # Any delivery may be sent again by hand: the same webhook-id, which receivers drop.
        first = receiver.raw[0][0]["webhook-id"]
        again = await client.post(f"/api/v1/webhooks/deliveries/{first}/redeliver")
        assert again.status_code == 200

        async def copied() -> bool:
            return receiver.copies == 1

        await until(copied)
    assert len(receiver.accepted) == 2


async def test_subscriptions_are_their_owners_alone(
    client: httpx.AsyncClient, client_for: ClientFor
) -> None:
    mine, theirs = await make_customer(client), await make_customer(client)
    me = await client_for("customer", mine["id"])
    them = await client_for("customer", theirs["id"])
    sub = await _subscribe(me, "https://example.com/hook")
    assert (await them.get(f"/api/v1/webhooks/subscriptions/{sub['id']}")).status_code == 404
    assert sub["id"] not in [
        s["id"] for s in (await them.get("/api/v1/webhooks/subscriptions")).json()
    ]
    refused = await them.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": "https://example.com/x", "customer_id": mine["id"]},
    )
    assert refused.status_code == 403
    bad = await me.post(
        "/api/v1/webhooks/subscriptions", json={"url": "ftp://x", "event_types": ["nope"]}
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    staff = await client_for("staff")
    assert (await staff.get("/api/v1/webhooks/subscriptions")).status_code == 403


async def test_the_global_notification_url_becomes_one_ordinary_subscription(
    pool: asyncpg.Pool,
) -> None:
    url = f"https://legacy-{uuid.uuid4().hex[:8]}.example/notify"
    first = await webhooks.adopt_notification_url(pool, url)
    again = await webhooks.adopt_notification_url(pool, url)  # the next worker start
    assert again.id == first.id
    assert first.partner == "other"
    assert first.customer_id is None
    assert first.description == "ORDERFLOW_NOTIFICATION_WEBHOOK_URL"
    assert set(first.event_types) == set(RECIPIENTS)
    assert first.secret.startswith("whsec_")

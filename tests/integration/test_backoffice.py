"""The back office over HTTP: sessions bound to their key, CSRF, roles, order search, the
order page and why it waits, re-drive, the dead-letter console and the health page (a real
server, PostgreSQL, RabbitMQ and Redis; no relay or worker, so orders stay where they are)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable

import aio_pika
import asyncpg
import httpx
import pytest

from orderflow.access import keys
from orderflow.access.sessions import SessionStore
from orderflow.domain.access import Principal, Role
from orderflow.domain.events import Envelope, OrderDelivered
from orderflow.entrypoints.worker import declare_saga_topology
from orderflow.kernel.redis import create_redis
from orderflow.kernel.topology import ATTEMPT, ERROR, FAILED, HANDLER, ROUTING_KEY, Names
from orderflow.settings import Settings
from tests.conftest import child_env
from tests.factories import make_customer, make_product, place_order
from tests.integration.conftest import bearer
from tests.integration.test_admin_dashboard import _csrf, _login, serve

Browser = tuple[httpx.AsyncClient, Settings]


@pytest.fixture(scope="session")
async def office_queues(settings: Settings) -> str:
    """One queue prefix, with the saga's topology declared once, for every test here: a
    topology is about fifty queues, and the broker is shared."""
    prefix = f"{settings.queue_prefix}.office"
    await declare_saga_topology(settings.model_copy(update={"queue_prefix": prefix}))
    return prefix


@pytest.fixture
async def office(
    app_settings: Callable[..., Settings], database: str, office_queues: str
) -> AsyncIterator[Browser]:
    """A real server of its own (own Redis prefix; the saga's queues declared), a key cache
    of 0.3 s, and a cookie-keeping client."""
    settings = app_settings(admin_refresh_s=0.05, auth_cache_ttl_s=0.3, queue_prefix=office_queues)
    async with serve(settings) as http:
        yield http, settings


async def _admin(http: httpx.AsyncClient, pool: asyncpg.Pool) -> str:
    key = await bearer(pool, Role.ADMIN)
    assert (await _login(http, key)).status_code == 204
    return key


async def test_revoking_the_key_ends_its_sessions_within_the_key_cache_ttl(
    office: Browser, pool: asyncpg.Pool
) -> None:
    http, settings = office
    key = await _admin(http, pool)
    assert (await http.get("/admin/api/me")).status_code == 200
    await keys.revoke_key(pool, ident=key)
    await asyncio.sleep(settings.auth_cache_ttl_s + 0.1)
    assert (await http.get("/admin/api/me")).status_code == 401
    assert (await http.get("/admin")).status_code == 303
    # The session itself is gone: a new key with the old cookie gets nothing back.
    assert (await http.get("/admin/api/snapshot")).status_code == 401


async def test_a_session_ends_at_its_absolute_lifetime_however_much_it_is_used(
    settings: Settings,
) -> None:
    link = create_redis(
        settings.model_copy(update={"redis_key_prefix": f"lifetime{uuid.uuid4().hex[:6]}"})
    )
    store = SessionStore(link, idle_s=60, lifetime_s=1)
    try:
        session_id, opened = await store.open(
            Principal(key_id=uuid.uuid4(), role=Role.ADMIN), key_prefix="abc"
        )
        assert (await store.get(session_id)) == opened  # in use, idle expiry renewed
        await asyncio.sleep(1.1)
        assert await store.get(session_id) is None
        assert await store.all() == []
    finally:
        await link.close()


async def test_writes_need_the_csrf_token_and_a_role_that_may(
    office: Browser, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    http, _ = office
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    cancel = f"/admin/api/orders/{order['id']}/cancel"
    assert (await _login(http, await bearer(pool, Role.STAFF))).status_code == 204
    staff = await _csrf(http)
    assert (await http.post(cancel, json={"confirm": True}, headers=staff)).status_code == 403
    replay = await http.post("/admin/api/dead-letters/replay", json={"ids": ["x"]}, headers=staff)
    assert replay.status_code == 403
    # A staff action is the staff's to take: refused here by the state machine, not the role.
    prepare = await http.post(
        f"/admin/api/orders/{order['id']}/prepare", json={"confirm": True}, headers=staff
    )
    assert prepare.status_code == 409

    await _admin(http, pool)
    assert (await http.post(cancel, json={"confirm": True})).status_code == 403  # no token
    forged = await http.post(cancel, json={"confirm": True}, headers={"X-CSRF-Token": "x" * 43})
    assert forged.status_code == 403
    admin = await _csrf(http)
    assert (await http.post(cancel, json={"confirm": False}, headers=admin)).status_code == 422
    assert (await client.get(f"/api/v1/orders/{order['id']}")).json()["status"] == "created"
    done = await http.post(cancel, json={"confirm": True, "reason": "test"}, headers=admin)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "cancelled"
    page = (await http.get(f"/admin/api/orders/{order['id']}")).json()
    assert [a["action"] for a in page["actions"]] == ["order.cancel"]
    assert page["actions"][0]["actor"].startswith("admin:")
    assert page["timeline"][-1]["event"] == "order.cancelled"


async def test_pay_again_is_an_admin_action_that_starts_the_payment_and_is_recorded(
    office: Browser, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    http, _ = office
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=None
    )
    pay = f"/admin/api/orders/{order['id']}/pay"
    assert (await _login(http, await bearer(pool, Role.STAFF))).status_code == 204
    staff = await _csrf(http)
    body = {"confirm": True, "payment_token": "pm_approve"}
    assert (await http.post(pay, json=body, headers=staff)).status_code == 403

    await _admin(http, pool)
    admin = await _csrf(http)
    unconfirmed = {"confirm": False, "payment_token": "pm_approve"}
    assert (await http.post(pay, json=unconfirmed, headers=admin)).status_code == 422
    assert (await client.get(f"/api/v1/orders/{order['id']}")).json()["status"] == (
        "awaiting_payment"
    )
    paid = await http.post(pay, json=body, headers=admin)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "payment_pending"
    page = (await http.get(f"/admin/api/orders/{order['id']}")).json()
    assert [a["action"] for a in page["actions"]] == ["order.pay"]
    assert page["timeline"][-1]["event"] == "payment.initiated"
    # The same rules as the API: an order already being paid is not paid twice.
    again = await http.post(pay, json=body, headers=admin)
    assert again.status_code == 409, again.text


async def test_orders_are_found_by_email_id_status_and_total_in_keyset_pages(
    office: Browser, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    http, _ = office
    await _admin(http, pool)
    cheap, dear = await make_product(client, price=100), await make_product(client, price=90_000)
    customer = await make_customer(client)
    placed = [
        await place_order(client, customer_id=customer["id"], lines=[(p["id"], 1)])
        for p in (cheap, cheap, dear)
    ]
    by_email = (
        await http.get("/admin/api/orders", params={"email": customer["email"].upper()})
    ).json()
    assert [o["id"] for o in by_email["items"]] == [o["id"] for o in reversed(placed)]
    first = (
        await http.get("/admin/api/orders", params={"email": customer["email"], "limit": 2})
    ).json()
    rest = (
        await http.get(
            "/admin/api/orders",
            params={"email": customer["email"], "limit": 2, "cursor": first["next_cursor"]},
        )
    ).json()
    assert [o["id"] for o in first["items"] + rest["items"]] == [o["id"] for o in reversed(placed)]
    assert rest["next_cursor"] is None
    prefix = placed[0]["id"][:8]
    by_id = (await http.get("/admin/api/orders", params={"id_prefix": prefix})).json()
    assert placed[0]["id"] in [o["id"] for o in by_id["items"]]
    assert all(o["id"].startswith(prefix) for o in by_id["items"])
    dear_only = (
        await http.get(
            "/admin/api/orders", params={"email": customer["email"], "total_min": 50_000}
        )
    ).json()
    assert [o["id"] for o in dear_only["items"]] == [placed[2]["id"]]
    none = await http.get(
        "/admin/api/orders", params={"email": customer["email"], "status": "delivered"}
    )
    assert none.json()["items"] == []
    bad = await http.get("/admin/api/orders", params={"id_prefix": "xyz"})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


async def test_an_order_page_says_why_it_waits_and_the_redrive_republishes(
    office: Browser, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    http, _ = office
    await _admin(http, pool)
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 2)])
    oid = uuid.UUID(order["id"])
    # No relay runs here: the order's first event waits in the outbox.
    await pool.execute(
        "UPDATE outbox SET created_at = now() - interval '1 minute' WHERE order_id = $1", oid
    )
    page = (await http.get(f"/admin/api/orders/{oid}")).json()
    assert page["order"]["lines"][0]["quantity"] == 2
    assert page["customer"]["email"] == customer["email"]
    assert [t["event"] for t in page["timeline"]] == ["order.created"]
    assert page["timeline"][0]["ongoing"]
    assert page["timeline"][0]["spent_s"] >= 0
    [reason] = page["stuck"]
    assert await _listed_as_stuck(http, order["id"]) == ["unpublished"]
    assert reason["code"] == "unpublished"
    assert reason["remedy"] == "republish"
    assert "order.created" in reason["text"]

    # Published, but its handler never got it (a lost message): republished by the re-drive.
    await pool.execute(
        "UPDATE outbox SET published_at = now() - interval '1 minute' WHERE order_id = $1", oid
    )
    await pool.execute(
        "UPDATE orders SET updated_at = now() - interval '1 minute' WHERE id = $1", oid
    )
    assert await _listed_as_stuck(http, order["id"]) == ["not_applied"]
    page = (await http.get(f"/admin/api/orders/{oid}")).json()
    [reason] = [r for r in page["stuck"] if r["code"] == "not_applied"]
    assert reason["handler"] == "payments.initiate"
    assert reason["queue"].endswith(".payments.initiate")
    redriven = await http.post(f"/admin/api/orders/{oid}/redrive", headers=await _csrf(http))
    assert redriven.status_code == 200, redriven.text
    assert redriven.json()["done"] == [
        {"remedy": "republish", "event_id": reason["event_id"], "result": "queued"}
    ]
    assert await pool.fetchval("SELECT published_at FROM outbox WHERE order_id = $1", oid) is None
    again = await http.post(f"/admin/api/orders/{oid}/redrive", headers=await _csrf(http))
    # Idempotent: the event waits for the relay already; the re-drive only nudges it.
    assert again.json()["done"] == [
        {"remedy": "republish", "event_id": reason["event_id"], "result": "already_waiting"}
    ]
    actions = (await http.get(f"/admin/api/orders/{oid}")).json()["actions"]
    assert [a["action"] for a in actions] == ["order.redrive", "order.redrive"]


async def _listed_as_stuck(http: httpx.AsyncClient, order_id: str) -> list[str]:
    """The reasons the stuck-orders list gives for this order."""
    items = (await http.get("/admin/api/stuck")).json()["items"]
    return [i["code"] for i in items if i["order_id"] == order_id]


def _letter(envelope: Envelope, handler: str, error: str) -> aio_pika.Message:
    return aio_pika.Message(
        envelope.model_dump_json().encode(),
        message_id=str(envelope.event_id),
        type=envelope.type,
        headers={
            HANDLER: handler,
            ERROR: error,
            ATTEMPT: 5,
            ROUTING_KEY: envelope.type,
            FAILED: int(time.time() * 1000) - 60_000,
        },
    )


async def _depth(settings: Settings, queue: str) -> int:
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def test_dead_letters_are_filtered_replayed_after_a_dry_run_discarded_and_recorded(
    office: Browser, pool: asyncpg.Pool, client: httpx.AsyncClient
) -> None:
    http, settings = office
    await _admin(http, pool)
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    names = Names.from_settings(settings)
    envelopes = [
        Envelope.wrap(
            OrderDelivered(carrier="test"),
            order_id=uuid.UUID(order["id"]),
        )
        for _ in range(2)
    ]
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel()
        for envelope in envelopes:
            await channel.default_exchange.publish(
                _letter(envelope, "payments.initiate", "TimeoutError: gateway"), names.dead_letters
            )
        await channel.default_exchange.publish(
            _letter(envelopes[0], "inventory.reserve", "PermanentError: bad lines"),
            names.dead_letters,
        )

    listed = (
        await http.get("/admin/api/dead-letters", params={"handler": "payments.initiate"})
    ).json()
    assert listed["count"] == 2
    letter = listed["items"][0]
    assert letter["error"].startswith("TimeoutError")
    assert letter["attempt"] == 5
    assert letter["order_id"] == order["id"]
    assert letter["payload"]["type"] == "order.delivered"
    assert letter["failed_at"]
    by_reason = (await http.get("/admin/api/dead-letters", params={"reason": "bad LINES"})).json()
    assert [x["handler"] for x in by_reason["items"]] == ["inventory.reserve"]
    assert (await http.get("/admin/api/dead-letters", params={"max_age_s": 10})).json()[
        "count"
    ] == 0
    assert (await http.get("/admin/api/dead-letters", params={"min_age_s": 10})).json()[
        "count"
    ] == 3

    assert await _listed_as_stuck(http, order["id"]) == ["dead_lettered"] * 3
    csrf = await _csrf(http)
    timeouts = {"handler": "payments.initiate", "reason": "timeout"}
    dry = await http.post(
        "/admin/api/dead-letters/replay", json={"filter": timeouts, "dry_run": True}, headers=csrf
    )
    assert dry.status_code == 200, dry.text
    assert dry.json()["count"] == 2
    assert len(dry.json()["first"]) == 2
    assert await _depth(settings, names.dead_letters) == 3  # the dry run changed nothing
    assert (await http.get(f"/admin/api/orders/{order['id']}")).json()["actions"] == []

    replayed = await http.post(
        "/admin/api/dead-letters/replay", json={"filter": timeouts}, headers=csrf
    )
    assert replayed.json()["count"] == 2
    assert await _depth(settings, names.dead_letters) == 1
    assert await _depth(settings, names.handler("payments.initiate").work) == 2

    no_reason = await http.post(
        "/admin/api/dead-letters/discard", json={"filter": {}}, headers=csrf
    )
    assert no_reason.status_code == 422
    discarded = await http.post(
        "/admin/api/dead-letters/discard",
        json={"filter": {}, "reason": "bad data, fixed by hand"},
        headers=csrf,
    )
    assert discarded.json()["count"] == 1
    assert await _depth(settings, names.dead_letters) == 0
    actions = (await http.get(f"/admin/api/orders/{order['id']}")).json()["actions"]
    assert [a["action"] for a in actions] == ["dead_letter.replay"] * 2 + ["dead_letter.discard"]
    assert actions[-1]["detail"]["reason"] == "bad data, fixed by hand"
    assert all(a["actor"].startswith("admin:") for a in actions)


async def test_the_health_page_shows_queues_outbox_and_processes(
    office: Browser, pool: asyncpg.Pool
) -> None:
    http, settings = office
    await _admin(http, pool)
    # Two retries and a deferral wait for this queue in PostgreSQL (ADR 0028).
    work = Names.from_settings(settings).handler("payments.initiate").work
    await pool.executemany(
        "INSERT INTO scheduled_deliveries (queue, reason, body, due_at) "
        "VALUES ($1, $2, '{}', now() + interval '1 hour')",
        [(work, "retry"), (work, "retry"), (work, "defer")],
    )
    try:
        health = (await http.get("/admin/api/health")).json()
    finally:
        await pool.execute("DELETE FROM scheduled_deliveries WHERE queue = $1", work)
    queues = {q["handler"]: q for q in health["queues"]}
    assert queues["payments.initiate"]["declared"]
    assert queues["payments.initiate"]["consumers"] == 0
    assert (queues["payments.initiate"]["retrying"], queues["payments.initiate"]["deferred"]) == (
        2,
        1,
    )
    assert queues["payments.charge"]["retrying"] == 0
    assert health["broker"] == "ok"
    assert health["dead_letters"] is not None
    assert health["outbox"]["backlog"] >= 0
    assert any(p["process"] == "orderflow-api" for p in health["processes"])
    assert health["errors"]["error_rate"] >= 0


async def test_the_sessions_cli_lists_and_revokes_sessions(
    office: Browser, pool: asyncpg.Pool
) -> None:
    http, settings = office
    key = await _admin(http, pool)
    env = child_env(settings)
    cli = [sys.executable, "-m", "orderflow.entrypoints.cli", "sessions"]
    listed = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, check=True)
    prefix = key.split("_")[1]
    assert prefix in listed.stdout
    ended = subprocess.run(
        [*cli, "revoke", "--key", f"ofk_{prefix}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1 ended" in ended.stdout
    assert (await http.get("/admin/api/me")).status_code == 401


async def test_swagger_ui_is_served_from_local_files(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "/docs/static/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css")):
        served = await client.get(f"/docs/static/{asset}")
        assert served.status_code == 200
        assert kind in served.headers["content-type"]
    assert (await client.get("/docs/static/../../settings.py")).status_code == 404
    assert (await client.get("/redoc")).status_code == 404


async def test_every_session_route_documents_and_answers_401_without_a_session(
    office: Browser, client: httpx.AsyncClient
) -> None:
    http, _ = office  # no login: the cookie jar is empty
    paths = (await client.get("/openapi.json")).json()["paths"]
    session_routes = {
        (path, method): operation
        for path, operations in paths.items()
        if path.startswith("/admin/api/") and path != "/admin/api/login-token"
        for method, operation in operations.items()
    }
    assert len(session_routes) > 10
    for (path, method), operation in session_routes.items():
        assert {"401", "403"} <= set(operation["responses"]), (path, method)
        if method == "get" and "{" not in path and not path.endswith("/stream"):
            refused = await http.get(path)
            assert refused.status_code == 401, (path, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"

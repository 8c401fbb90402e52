"""The back office in a real browser, against the real system: what an operator does."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from typing import Any

import aio_pika
import asyncpg
import httpx
import orjson
from playwright.async_api import Locator, Page, expect

from orderflow.domain.access import Role
from orderflow.kernel.topology import ATTEMPT, ERROR, FAILED, HANDLER, ROUTING_KEY, Names
from orderflow.settings import Settings
from tests.browser.conftest import PHONE, log_in, shoot, until
from tests.conftest import child_env
from tests.factories import make_customer, make_product, place_order
from tests.integration.conftest import bearer


def _nav(page: Page, name: str) -> Locator:
    """A link of the main navigation (tiles on the overview are links too)."""
    return page.get_by_role("navigation").get_by_role("link", name=name, exact=True)


async def _order(api: httpx.AsyncClient, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    product = await make_product(api, price=2450, stock=50)
    customer = await make_customer(api)
    order = await place_order(api, customer_id=customer["id"], lines=[(product["id"], 2)], **kwargs)
    return order, customer


async def _status_is(api: httpx.AsyncClient, order_id: str, status: str) -> None:
    async def reached() -> bool:
        return bool((await api.get(f"/api/v1/orders/{order_id}")).json()["status"] == status)

    await until(reached)


async def _staff(api: httpx.AsyncClient, pool: asyncpg.Pool) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {await bearer(pool, Role.STAFF)}"}
    return httpx.AsyncClient(base_url=str(api.base_url), timeout=10, headers=headers)


async def test_an_order_placed_over_the_api_is_watched_to_delivered_without_a_reload(
    page: Page, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await log_in(page, await bearer(pool, Role.ADMIN))
    order, _ = await _order(api)
    row = page.locator(f'#recent tr[data-order="{order["id"]}"]')
    await expect(row).to_be_visible()  # the live feed brought it: no reload
    await shoot(page, "overview")
    await page.evaluate("window.__sameDocument = true")
    await row.get_by_role("link").click()
    status = page.locator("h2 .status")
    await expect(status).to_have_text("reserved")  # paid, stock held: waits for the warehouse
    await expect(page.locator("#stuck")).to_contain_text("waits for the warehouse")
    async with await _staff(api, pool) as staff:  # the warehouse and the carrier, over the API
        for step in ("prepare", "ship", "deliver"):
            body = {"carrier": "DHL"} if step == "ship" else None
            done = await staff.post(f"/api/v1/orders/{order['id']}/{step}", json=body)
            assert done.status_code == 200, done.text
    await expect(status).to_have_text("delivered")
    assert await page.evaluate("window.__sameDocument") is True  # never reloaded
    await expect(page.locator("#timeline tbody tr")).to_have_count(8)
    await shoot(page, "order-delivered")


async def test_an_order_is_found_by_customer_email_and_its_timeline_read(
    page: Page, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    order, customer = await _order(api)
    await _status_is(api, order["id"], "reserved")
    await log_in(page, await bearer(pool, Role.ADMIN))
    await _nav(page, "Orders").click()
    await page.get_by_label("Customer email").fill(customer["email"])
    await page.get_by_label("Customer email").press("Enter")
    results = page.locator("#orders tbody tr")
    await expect(results).to_have_count(1)
    await expect(results.first).to_contain_text(customer["email"])
    await shoot(page, "orders-search")
    await results.first.get_by_role("link").click()
    timeline = page.locator("#timeline tbody tr")
    events = ["order.created", "payment.initiated", "payment.processed", "order.paid"]
    for n, event in enumerate(events):
        await expect(timeline.nth(n)).to_contain_text(event)
    await expect(timeline.last).to_contain_text("so far")  # time spent in the current step
    await expect(page.locator("#customer-email")).to_have_text(customer["email"])
    await expect(page.locator("#payments")).to_contain_text("captured")
    await shoot(page, "order-page")
    await page.set_viewport_size(PHONE)
    await shoot(page, "order-page-phone")


async def test_an_order_is_cancelled_with_confirmation_and_its_refund_shown(
    page: Page, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    order, _ = await _order(api)
    await _status_is(api, order["id"], "reserved")
    await log_in(page, await bearer(pool, Role.ADMIN))
    await page.goto(f"/admin#/orders/{order['id']}")
    await page.get_by_role("button", name="Cancel and refund…").click()
    dialog = page.locator("dialog#confirm")
    await expect(dialog).to_be_visible()
    await shoot(page, "order-cancel-confirm", full=False)
    await page.keyboard.press("Escape")  # backing out changes nothing
    await expect(dialog).to_be_hidden()
    await expect(page.locator("h2 .status")).to_have_text("reserved")
    await page.get_by_role("button", name="Cancel and refund…").click()
    await dialog.get_by_label("Reason").fill("customer called")
    await dialog.get_by_label("Reason").press("Enter")
    await expect(page.locator("h2 .status")).to_have_text("cancelled")
    refund = page.locator('#transactions tr[data-kind="refund"]')
    await expect(refund).to_be_visible()  # the compensation ran in the worker
    await expect(refund).to_contain_text(re.compile(r"49\.00"))
    await expect(page.locator("#actions")).to_contain_text("order.cancel")
    await shoot(page, "order-cancelled")


async def _plant_dead_letter(settings: Settings, pool: asyncpg.Pool, api: httpx.AsyncClient) -> str:
    """An order stuck in ``paid``: its ``order.paid`` message dead-lettered at
    ``inventory.reserve`` (the queue is unbound while the order is paid, then the event's
    message is put in the dead letters as the worker would have)."""
    names = Names.from_settings(settings)
    queue = names.handler("inventory.reserve").work
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(settings.exchange)
        work = await channel.get_queue(queue)
        await work.unbind(exchange, "order.paid")
        try:
            order, _ = await _order(api)
            await _status_is(api, order["id"], "paid")

            async def published() -> bool:
                found = await pool.fetchval(
                    "SELECT published_at IS NOT NULL FROM outbox "
                    "WHERE order_id = $1 AND event_type = 'order.paid'",
                    uuid.UUID(order["id"]),
                )
                return bool(found)

            await until(published)
        finally:
            await work.bind(exchange, "order.paid")
        row = await pool.fetchrow(
            "SELECT event_id, envelope FROM outbox "
            "WHERE order_id = $1 AND event_type = 'order.paid'",
            uuid.UUID(order["id"]),
        )
        await channel.default_exchange.publish(
            aio_pika.Message(
                orjson.dumps(row["envelope"]),
                message_id=str(row["event_id"]),
                type="order.paid",
                headers={
                    HANDLER: "inventory.reserve",
                    ERROR: "PermanentError: planted by the browser test",
                    ATTEMPT: 1,
                    ROUTING_KEY: "order.paid",
                    FAILED: int(time.time() * 1000),
                },
            ),
            names.dead_letters,
        )
    return str(order["id"])


async def _dead_letters(settings: Settings) -> int:
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value(), timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            Names.from_settings(settings).dead_letters, passive=True
        )
        return queue.declaration_result.message_count or 0


async def test_a_dead_lettered_order_shows_why_and_completes_after_a_dry_run_and_a_replay(
    page: Page, api: httpx.AsyncClient, pool: asyncpg.Pool, ui_settings: Settings
) -> None:
    order_id = await _plant_dead_letter(ui_settings, pool, api)
    await log_in(page, await bearer(pool, Role.ADMIN))
    await page.goto(f"/admin#/orders/{order_id}")
    stuck = page.locator("#stuck")
    await expect(stuck).to_contain_text("order.paid was dead-lettered by inventory.reserve")
    await expect(stuck).to_contain_text("planted by the browser test")
    await shoot(page, "order-stuck")
    await _nav(page, "Stuck").click()
    listed = page.locator(f'#stuck-orders tr[data-order="{order_id}"]')
    await expect(listed).to_contain_text("dead lettered")
    await shoot(page, "stuck")

    await _nav(page, "Dead letters").click()
    await page.get_by_label("Handler").fill("inventory.reserve")
    await page.get_by_label("Handler").press("Enter")
    await expect(page.locator("#letter-count")).to_have_text("1 dead letter(s) match")
    await shoot(page, "dead-letters")
    await page.get_by_role("button", name=re.compile("Replay all matching")).click()
    dialog = page.locator("dialog#confirm")
    await expect(dialog).to_contain_text(
        "Dry run: 1 would be replayed; first: order.paid (inventory.reserve)"
    )
    assert await _dead_letters(ui_settings) == 1  # the dry run changed nothing
    await shoot(page, "dead-letters-dry-run", full=False)
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(page.locator("#toast")).to_contain_text("replayed 1")
    assert await _dead_letters(ui_settings) == 0

    await page.goto(f"/admin#/orders/{order_id}")
    status = page.locator("h2 .status")
    await expect(status).to_have_text("reserved")  # inventory.reserve applied it at last
    for action, fields in (("Prepare…", {}), ("Ship…", {"Carrier": "DHL"}), ("Deliver…", {})):
        await page.get_by_role("button", name=action).click()
        for label, value in fields.items():
            await page.locator("dialog#confirm").get_by_label(label).fill(value)
        await page.locator("dialog#confirm").get_by_role("button", name="Confirm").click()
        await expect(page.get_by_role("button", name=action)).to_be_hidden()
    await expect(status).to_have_text("delivered")
    actions = page.locator("#actions")
    for done in ("dead_letter.replay", "order.prepare", "order.ship", "order.deliver"):
        await expect(actions).to_contain_text(done)


async def test_the_overdue_and_health_pages(page: Page, pool: asyncpg.Pool) -> None:
    await log_in(page, await bearer(pool, Role.ADMIN))
    await _nav(page, "Health").click()
    await expect(page.locator("#queues")).to_contain_text("inventory.reserve")
    await expect(page.locator("#processes")).to_contain_text("orderflow-worker")
    await expect(page.locator("#processes")).to_contain_text("orderflow-relay")
    await shoot(page, "health")
    await _nav(page, "Overdue").click()
    await expect(page.locator("#overdue")).to_be_visible()
    await shoot(page, "overdue")
    await page.set_viewport_size(PHONE)
    await _nav(page, "Overview").click()
    await shoot(page, "overview-phone")


async def test_a_revoked_keys_open_dashboard_is_sent_to_log_in(
    page: Page, pool: asyncpg.Pool, ui_settings: Settings
) -> None:
    key = await bearer(pool, Role.ADMIN)
    await log_in(page, key)
    await expect(page.locator("#live")).to_have_text("live")
    revoked = subprocess.run(
        [sys.executable, "-m", "orderflow.entrypoints.cli", "keys", "revoke", key.split("_")[1]],
        env=child_env(ui_settings),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "revoked" in revoked.stdout
    await expect(page).to_have_url(re.compile(r"/admin/login$"), timeout=10_000)
    assert (await page.request.get("/admin/api/me")).status == 401


async def test_a_customer_key_is_refused(
    page: Page, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    customer = await make_customer(api)
    await page.goto("/admin/login")
    await shoot(page, "login")
    await page.get_by_label("Admin or staff API key").fill(
        await bearer(pool, Role.CUSTOMER, customer["id"])
    )
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#error")).to_have_text("the back office is for admin and staff keys")
    assert (await page.request.get("/admin/api/me")).status == 401
    await page.goto("/admin")
    await expect(page).to_have_url(re.compile(r"/admin/login$"))

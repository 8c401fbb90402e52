"""The audit reports each kind of violation it claims to, and nothing on a healthy database.

The audit reads the whole database, so these tests use a database of their own (the shared
per-run one holds other tests' unfinished orders). Healthy orders are run through the real
saga (tests/pump.py); broken states are written with plain SQL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY

from orderflow.domain.access import Role
from orderflow.domain.orders import OrderStatus
from orderflow.entrypoints.api.app import create_app
from orderflow.entrypoints.bootstrap import Deps, build_registry
from orderflow.kernel.database import create_pool, drop_database, ensure_database, with_database
from orderflow.observability import metrics
from orderflow.operations.audit import run_audit
from orderflow.operations.invariants import Check, Violation
from orderflow.operations.watch import audit_invariants, watch_system
from orderflow.settings import Settings
from tests.conftest import RUN_ID, migrate
from tests.factories import make_customer, make_product, place_order
from tests.integration.conftest import bearer
from tests.pump import pump


@dataclass
class AuditDb:
    settings: Settings
    pool: asyncpg.Pool
    client: httpx.AsyncClient


@pytest.fixture(scope="module")
async def audit_db(settings: Settings) -> AsyncIterator[AuditDb]:
    dsn = with_database(settings.dsn(), f"orderflow_test_{RUN_ID}_audit")
    own = settings.model_copy(update={"database_url": type(settings.database_url)(dsn)})
    await ensure_database(dsn)
    await migrate(dsn)
    pool = await create_pool(own, min_size=1, max_size=5)
    app = create_app(own)
    try:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            headers = {"Authorization": f"Bearer {await bearer(pool, Role.ADMIN)}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=headers
            ) as client:
                yield AuditDb(own, pool, client)
    finally:
        await pool.close()
        if not os.environ.get("ORDERFLOW_KEEP_TEST_DB"):
            await drop_database(dsn)


def _about(found: list[Violation], check: Check, subject: uuid.UUID) -> list[Violation]:
    return [v for v in found if v.check is check and subject in (v.order_id, v.product_id)]


async def test_a_healthy_database_after_the_saga_reports_nothing(audit_db: AuditDb) -> None:
    client, pool = audit_db.client, audit_db.pool
    autopilot = audit_db.settings.model_copy(
        update={"autopilot": True, "autopilot_delay_s": 0.0, "payment_slow_delay_s": 0.0}
    )
    registry = build_registry(Deps(settings=autopilot, pool=pool))
    plenty = await make_product(client, price=400, stock=50)
    scarce = await make_product(client, price=900, stock=1)
    customer = await make_customer(client)
    ids = []
    for lines, token in [
        ([(plenty["id"], 2), (scarce["id"], 1)], "pm_approve"),  # delivered
        ([(plenty["id"], 1), (scarce["id"], 1)], "pm_approve"),  # out of stock: refunded
        ([(plenty["id"], 3)], "pm_flaky"),  # delivered after transient failures
    ]:
        order = await place_order(
            client, customer_id=customer["id"], lines=lines, payment_token=token
        )
        ids.append(uuid.UUID(order["id"]))
    unpaid = await place_order(
        client, customer_id=customer["id"], lines=[(plenty["id"], 1)], payment_token=None
    )
    ids.append(uuid.UUID(unpaid["id"]))
    await pump(pool, registry, ids)
    cancelled = await client.post(f"/api/v1/orders/{unpaid['id']}/cancel")
    assert cancelled.status_code == 200
    await pump(pool, registry, ids)
    statuses = {r["status"] for r in await pool.fetch("SELECT status FROM orders")}
    assert statuses == {"delivered", "cancelled"}

    report = await run_audit(pool, grace_s=0, page_size=2)  # small pages: keyset paging runs

    assert report.violations == []
    assert (report.orders, report.products) == (4, 2)


# --- builders of broken states, in plain SQL --------------------------------------------------


async def _product(pool: asyncpg.Pool, *, stock: int = 10, ledger: int | None = None) -> uuid.UUID:
    pid = uuid.uuid4()
    await pool.execute(
        "INSERT INTO products (id, sku, name, price, currency, stock) "
        "VALUES ($1, $2, 'p', 100, 'EUR', $3)",
        pid,
        f"AUDIT-{pid.hex[:12]}",
        stock,
    )
    initial = stock if ledger is None else ledger
    if initial:
        await pool.execute(
            "INSERT INTO stock_movements (product_id, kind, quantity) VALUES ($1, 'initial', $2)",
            pid,
            initial,
        )
    return pid


async def _order(
    pool: asyncpg.Pool,
    *,
    status: str,
    timeline: list[tuple[str, str]],
    lines: list[tuple[uuid.UUID, int]],
    age_s: float = 3600,
    updated_age_s: float | None = None,
    reserve: bool | None = None,
    charge: int | None = None,
    refund: int | None = None,
) -> uuid.UUID:
    """An order of unit price 100 per line; ``reserve`` defaults to what its status holds.

    It was created ``age_s`` ago and last changed ``updated_age_s`` ago (by default, then too).
    """
    oid, cid = uuid.uuid4(), uuid.uuid4()
    total = sum(100 * q for _, q in lines)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO customers (id, email, name) VALUES ($1, $2, 'a')", cid, f"{cid}@x.org"
        )
        await conn.execute(
            "INSERT INTO orders (id, customer_id, status, currency, subtotal, discount, tax, "
            "total, pricing, payment_token, cancel_reason, created_at, updated_at) VALUES ($1,"
            " $2, $3, 'EUR', $4, 0, 0, $4, 'standard', 'pm_approve', $5,"
            " now() - make_interval(secs => $6), now() - make_interval(secs => $7))",
            oid,
            cid,
            status,
            total,
            "admin" if status == "cancelled" else None,
            age_s,
            age_s if updated_age_s is None else updated_age_s,
        )
        for n, (pid, qty) in enumerate(lines, start=1):
            await conn.execute(
                "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, unit_price, "
                "quantity, line_total) VALUES ($1, $2, $3, 's', 'p', 100, $4, 100 * $4)",
                oid,
                n,
                pid,
                qty,
            )
        for event, after in timeline:
            await conn.execute(
                "INSERT INTO order_timeline (order_id, event_id, event_type, actor, status_after,"
                " occurred_at) VALUES ($1, $2, $3, 'test', $4, now())",
                oid,
                uuid.uuid4(),
                event,
                after,
            )
        if reserve if reserve is not None else status in {"reserved", "shipped", "delivered"}:
            for pid, qty in lines:
                await conn.execute(
                    "INSERT INTO stock_movements (product_id, order_id, kind, quantity) "
                    "VALUES ($1, $2, 'reserve', $3)",
                    pid,
                    oid,
                    -qty,
                )
                await conn.execute("UPDATE products SET stock = stock - $2 WHERE id = $1", pid, qty)
        if charge is not None:
            payment = uuid.uuid4()
            await conn.execute(
                "INSERT INTO payments (id, order_id, attempt, payment_token, amount, currency, "
                "status) VALUES ($1, $2, 1, 'pm_approve', $3, 'EUR', $4)",
                payment,
                oid,
                charge,
                "refunded" if refund is not None else "captured",
            )
            for kind, amount in (("charge", charge), ("refund", refund)):
                if amount is not None:
                    await conn.execute(
                        "INSERT INTO payment_transactions (payment_id, order_id, kind, amount, "
                        "currency, idempotency_key) VALUES ($1, $2, $3, $4, 'EUR', $5)",
                        payment,
                        oid,
                        kind,
                        amount,
                        f"{kind}:{payment}",
                    )
    return oid


HAPPY = [
    ("order.created", "created"),
    ("payment.initiated", "payment_pending"),
    ("payment.processed", "payment_pending"),
    ("order.paid", "paid"),
    ("inventory.checked", "reserved"),
    ("order.prepared", "prepared"),
    ("order.shipped", "shipped"),
    ("order.delivered", "delivered"),
]


async def test_an_old_order_that_is_not_terminal_is_reported(audit_db: AuditDb) -> None:
    pid = await _product(audit_db.pool)
    stuck = await _order(
        audit_db.pool, status="paid", timeline=HAPPY[:4], lines=[(pid, 1)], charge=100
    )
    young = await _order(
        audit_db.pool, status="paid", timeline=HAPPY[:4], lines=[(pid, 1)], charge=100, age_s=1
    )

    found = (await run_audit(audit_db.pool, grace_s=60)).violations

    assert [v.detail for v in _about(found, Check.STALE, stuck)] == [
        "still paid after the grace period"
    ]
    assert _about(found, Check.STALE, young) == []


async def test_an_unpaid_order_is_stale_only_after_the_unpaid_ttl_and_the_grace(
    audit_db: AuditDb,
) -> None:
    pool = audit_db.pool
    pid = await _product(pool)
    unpaid = [("order.created", "awaiting_payment")]
    declined = [*HAPPY[:2], ("payment.failed", "awaiting_payment")]
    within_ttl = await _order(pool, status="awaiting_payment", timeline=unpaid, lines=[(pid, 1)])
    declined_lately = await _order(
        pool,
        status="awaiting_payment",
        timeline=declined,
        lines=[(pid, 1)],
        age_s=4 * 3600,
        updated_age_s=3600,
    )
    past_ttl = await _order(
        pool, status="awaiting_payment", timeline=unpaid, lines=[(pid, 1)], age_s=7200 + 61
    )
    paid = await _order(pool, status="paid", timeline=HAPPY[:4], lines=[(pid, 1)], charge=100)

    found = (await run_audit(pool, grace_s=60, unpaid_ttl_s=7200)).violations

    assert _about(found, Check.STALE, within_ttl) == []
    assert _about(found, Check.STALE, declined_lately) == []  # the TTL runs from the decline
    assert [v.detail for v in _about(found, Check.STALE, past_ttl)] == [
        "still awaiting_payment after the unpaid-order TTL and the grace period"
    ]
    assert [v.detail for v in _about(found, Check.STALE, paid)] == [
        "still paid after the grace period"
    ]
    assert not [
        v
        for v in found
        if v.order_id in {within_ttl, declined_lately, past_ttl} and v.check is not Check.STALE
    ]


async def test_a_timeline_that_skips_a_state_is_reported(audit_db: AuditDb) -> None:
    pid = await _product(audit_db.pool)
    skipped = await _order(
        audit_db.pool,
        status="delivered",
        timeline=[("order.created", "created"), ("order.delivered", "delivered")],
        lines=[(pid, 1)],
        charge=100,
    )
    wrong_status = await _order(
        audit_db.pool,
        status="delivered",
        timeline=[*HAPPY[:3], ("order.paid", "reserved"), *HAPPY[4:]],
        lines=[(pid, 1)],
        charge=100,
    )
    ends_elsewhere = await _order(
        audit_db.pool, status="delivered", timeline=HAPPY[:7], lines=[(pid, 1)], charge=100
    )
    no_timeline = await _order(
        audit_db.pool, status="delivered", timeline=[], lines=[(pid, 1)], charge=100
    )

    found = (await run_audit(audit_db.pool)).violations

    assert "not allowed from created" in _about(found, Check.TIMELINE, skipped)[0].detail
    assert "moved it from payment_pending to reserved" in (
        _about(found, Check.TIMELINE, wrong_status)[0].detail
    )
    assert "ends in shipped" in _about(found, Check.TIMELINE, ends_elsewhere)[0].detail
    assert _about(found, Check.TIMELINE, no_timeline)[0].detail == "the order has no timeline"


async def test_an_event_applied_twice_is_reported(audit_db: AuditDb) -> None:
    pid = await _product(audit_db.pool)
    twice = await _order(
        audit_db.pool,
        status="delivered",
        timeline=[*HAPPY[:3], ("payment.processed", "payment_pending"), *HAPPY[3:]],
        lines=[(pid, 1)],
        charge=100,
    )

    found = (await run_audit(audit_db.pool)).violations

    assert "payment.processed" in _about(found, Check.APPLIED_TWICE, twice)[0].detail
    assert _about(found, Check.TIMELINE, twice) == []  # informational: the walk itself is legal


async def test_an_outbox_row_never_published_is_reported(audit_db: AuditDb) -> None:
    pid = await _product(audit_db.pool)
    oid = await _order(
        audit_db.pool, status="delivered", timeline=HAPPY, lines=[(pid, 1)], charge=100
    )
    await audit_db.pool.execute(
        "INSERT INTO outbox (event_id, event_type, order_id, envelope, created_at) "
        "VALUES ($1, 'order.created', $2, '{}', now() - interval '1 hour')",
        uuid.uuid4(),
        oid,
    )

    found = (await run_audit(audit_db.pool)).violations

    assert "never published" in _about(found, Check.UNPUBLISHED, oid)[0].detail


async def test_stock_that_disagrees_with_its_movements_is_reported(audit_db: AuditDb) -> None:
    drifted = await _product(audit_db.pool, stock=10, ledger=12)

    found = (await run_audit(audit_db.pool)).violations

    assert _about(found, Check.STOCK_LEDGER, drifted)[0].detail == (
        "stock is 10 but its movements add up to 12"
    )


async def test_negative_stock_is_reported(audit_db: AuditDb) -> None:
    # The schema refuses negative stock; drop that guard in this test's own database to see
    # that the audit would catch it too.
    await audit_db.pool.execute("ALTER TABLE products DROP CONSTRAINT products_stock_check")
    negative = await _product(audit_db.pool, stock=-2, ledger=0)
    await audit_db.pool.execute(
        "INSERT INTO stock_movements (product_id, kind, quantity) VALUES ($1, 'adjust', -2)",
        negative,
    )

    found = (await run_audit(audit_db.pool)).violations

    assert _about(found, Check.NEGATIVE_STOCK, negative)[0].detail == "stock is -2"
    assert _about(found, Check.STOCK_LEDGER, negative) == []


async def test_stock_held_against_the_order_status_is_reported(audit_db: AuditDb) -> None:
    pool = audit_db.pool
    pid = await _product(pool)
    unreserved = await _order(
        pool, status="delivered", timeline=HAPPY, lines=[(pid, 2)], charge=200, reserve=False
    )
    paid_holding = await _order(
        pool, status="paid", timeline=HAPPY[:4], lines=[(pid, 1)], charge=100, reserve=True, age_s=1
    )
    cancelled_holding = await _order(
        pool,
        status="cancelled",
        timeline=[*HAPPY[:5], ("order.cancelled", "cancelled")],
        lines=[(pid, 3)],
        charge=300,
        refund=300,
        reserve=True,
    )

    found = (await run_audit(pool)).violations

    assert "expected reserve [-2]" in _about(found, Check.RESERVATION, unreserved)[0].detail
    assert "paid but holds stock" in _about(found, Check.RESERVATION, paid_holding)[0].detail
    assert "cancelled but still holds" in (
        _about(found, Check.RESERVATION, cancelled_holding)[0].detail
    )


async def test_money_that_does_not_square_with_the_order_is_reported(audit_db: AuditDb) -> None:
    pool = audit_db.pool
    pid = await _product(pool)
    unpaid_delivery = await _order(pool, status="delivered", timeline=HAPPY, lines=[(pid, 1)])
    kept = await _order(
        pool,
        status="cancelled",
        timeline=[*HAPPY[:4], ("order.cancelled", "cancelled")],
        lines=[(pid, 2)],
        charge=200,
    )
    overcharged = await _order(
        pool, status="paid", timeline=HAPPY[:4], lines=[(pid, 1)], charge=500, age_s=1
    )

    found = (await run_audit(pool)).violations

    assert "kept 0" in _about(found, Check.MONEY, unpaid_delivery)[0].detail
    assert _about(found, Check.MONEY, kept)[0].detail.startswith("cancelled but kept 200")
    assert _about(found, Check.MONEY, overcharged)[0].detail == "kept 500 on an order of 100"


def _audit_command(audit_db: AuditDb, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orderflow.entrypoints.cli", "audit", "--json"],
        env={**os.environ, "ORDERFLOW_DATABASE_URL": audit_db.settings.dsn(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_audit_command_gives_unpaid_orders_the_configured_ttl(
    audit_db: AuditDb,
) -> None:
    pid = await _product(audit_db.pool)
    unpaid = await _order(
        audit_db.pool,
        status="awaiting_payment",
        timeline=[("order.created", "awaiting_payment")],
        lines=[(pid, 1)],
        age_s=3600,
    )

    long_ttl = _audit_command(audit_db, ORDERFLOW_UNPAID_ORDER_TTL_S="7200")
    short_ttl = _audit_command(audit_db, ORDERFLOW_UNPAID_ORDER_TTL_S="1800")

    assert long_ttl.returncode == 1, long_ttl.stderr  # the other tests' broken orders
    assert str(unpaid) not in long_ttl.stdout
    assert str(unpaid) in short_ttl.stdout


def test_the_audit_command_prints_violations_and_exits_1(audit_db: AuditDb) -> None:
    done = _audit_command(audit_db)
    assert done.returncode == 1, done.stderr
    assert '"ok": false' in done.stdout
    assert '"money"' in done.stdout


async def _run_one_round(
    duty: Callable[[Settings, asyncpg.Pool, asyncio.Event], Coroutine[Any, Any, None]],
    settings: Settings,
    pool: asyncpg.Pool,
    done: Callable[[], bool],
) -> None:
    """Run a worker duty until ``done()`` says its first round has exported, then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(duty(settings, pool, stop))
    try:
        for _ in range(200):
            if done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


async def test_the_workers_periodic_audit_exports_its_violations_per_check(
    audit_db: AuditDb,
) -> None:
    await _product(audit_db.pool, stock=3, ledger=5)
    before = REGISTRY.get_sample_value("orderflow_audit_last_run_timestamp_seconds") or 0.0
    settings = audit_db.settings.model_copy(update={"audit_interval_s": 60.0})

    await _run_one_round(
        audit_invariants,
        settings,
        audit_db.pool,
        lambda: (
            (REGISTRY.get_sample_value("orderflow_audit_last_run_timestamp_seconds") or 0) > before
        ),
    )

    def gauge(check: Check) -> float | None:
        return REGISTRY.get_sample_value("orderflow_invariant_violations", {"check": check.value})

    assert (gauge(Check.STOCK_LEDGER) or 0) >= 1
    assert gauge(Check.NEGATIVE_STOCK) is not None  # every audited check is exported, 0 or not
    # An order waiting long is the SLA watchdog's business, not a broken invariant.
    assert gauge(Check.STALE) is None


async def test_the_system_watch_exports_outbox_backlog_scheduled_retries_and_orders_per_status(
    audit_db: AuditDb,
) -> None:
    product = await make_product(audit_db.client, price=500)
    customer = await make_customer(audit_db.client)
    order = await place_order(
        audit_db.client, customer_id=customer["id"], lines=[(product["id"], 1)]
    )
    # Nothing relays in this database: the order's event waits in the outbox; make it old.
    await audit_db.pool.execute(
        "UPDATE outbox SET created_at = now() - interval '120 seconds' WHERE order_id = $1",
        uuid.UUID(order["id"]),
    )
    expected_backlog = await audit_db.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL"
    )
    expected = dict(
        await audit_db.pool.fetch("SELECT status, count(*) FROM orders GROUP BY status")
    )
    settings = audit_db.settings.model_copy(update={"system_watch_interval_s": 60.0})
    metrics.OUTBOX_BACKLOG.set(-1)
    await audit_db.pool.execute(
        "INSERT INTO scheduled_deliveries (queue, reason, body, due_at) "
        "VALUES ('q', 'retry', '{}', now() + interval '1 hour')"
    )
    waiting = dict(
        await audit_db.pool.fetch(
            "SELECT reason, count(*) FROM scheduled_deliveries GROUP BY reason"
        )
    )

    try:
        await _run_one_round(
            watch_system,
            settings,
            audit_db.pool,
            lambda: REGISTRY.get_sample_value("orderflow_outbox_backlog") != -1,
        )
    finally:
        await audit_db.pool.execute("DELETE FROM scheduled_deliveries WHERE queue = 'q'")
    for reason in ("retry", "defer"):
        value = REGISTRY.get_sample_value("orderflow_scheduled_deliveries", {"reason": reason})
        assert value == waiting.get(reason, 0), reason
    assert waiting["retry"] >= 1

    assert REGISTRY.get_sample_value("orderflow_outbox_backlog") == expected_backlog >= 1
    assert (
        REGISTRY.get_sample_value("orderflow_outbox_oldest_unpublished_age_seconds") or 0
    ) >= 120
    for status in OrderStatus:
        value = REGISTRY.get_sample_value("orderflow_orders", {"status": status.value})
        assert value == expected.get(status.value, 0), status

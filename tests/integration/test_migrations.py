from __future__ import annotations

import asyncpg

from orderflow.kernel.database import drop_database, ensure_database, with_database
from orderflow.settings import Settings
from tests.conftest import RUN_ID, migrate

TABLES = {
    "customers",
    "api_keys",
    "products",
    "orders",
    "order_lines",
    "payments",
    "payment_transactions",
    "stock_movements",
    "order_overdue",
    "admin_actions",
    "order_timeline",
    "outbox",
    "inbox",
    "idempotency_keys",
    "notifications",
    "timeline_sequence",
    "webhook_subscriptions",
    "webhook_deliveries",
    "webhook_attempts",
    "webhook_cursor",
    "scheduled_deliveries",
}


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


async def test_empty_database_migrates_to_head_and_back_down(settings: Settings) -> None:
    dsn = with_database(settings.dsn(), f"orderflow_migr_{RUN_ID}")
    await ensure_database(dsn)
    try:
        await migrate(dsn)
        assert await _tables(dsn) == TABLES
        await migrate(dsn, "base", down=True)
        assert await _tables(dsn) == set()
        await migrate(dsn)  # and up again: the downgrade left nothing behind
        assert await _tables(dsn) == TABLES
    finally:
        await drop_database(dsn)


async def test_tables_that_churn_are_vacuumed_after_a_fixed_number_of_dead_rows(
    pool: asyncpg.Pool,
) -> None:
    """Orders, outbox rows, payments, stock, idempotency records and scheduled deliveries are
    updated or deleted all the time: autovacuum must not wait for a fifth of each table to be
    dead."""
    rows = await pool.fetch(
        "SELECT relname, reloptions FROM pg_class WHERE relname = ANY($1::text[]) "
        "AND relnamespace = 'public'::regnamespace",
        ["orders", "outbox", "payments", "products", "idempotency_keys", "scheduled_deliveries"],
    )
    assert len(rows) == 6
    for row in rows:
        options = dict(option.split("=", 1) for option in row["reloptions"] or [])
        assert options.get("autovacuum_vacuum_scale_factor") == "0", row["relname"]
        assert int(options["autovacuum_vacuum_threshold"]) <= 10_000, row["relname"]


async def test_schema_refuses_negative_stock_and_float_money(pool: asyncpg.Pool) -> None:
    money_types = await pool.fetch(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
        "AND c.data_type IN ('real', 'double precision')"
    )  # tables only: an extension's views (pg_stat_statements in template1) are not ours
    assert money_types == []
    async with pool.acquire() as conn:
        try:
            await conn.execute(
                "INSERT INTO products (id, sku, name, price, currency, stock) "
                "VALUES (gen_random_uuid(), 'NEG', 'n', 1, 'EUR', -1)"
            )
        except asyncpg.CheckViolationError:
            pass
        else:
            raise AssertionError("negative stock was accepted")

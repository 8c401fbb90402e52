"""The bench's stand-in for autovacuum vacuums what autovacuum would, and only when asked."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from orderflow.bench.vacuum import StandInVacuum


async def _dead(pool: asyncpg.Pool, table: str) -> int:
    value = await pool.fetchval(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = $1", table
    )
    return int(value or 0)


async def test_tables_past_their_own_autovacuum_threshold_are_vacuumed(
    pool: asyncpg.Pool,
) -> None:
    churn, calm = (f"bench_{name}_{uuid.uuid4().hex[:6]}" for name in ("churn", "calm"))
    async with pool.acquire() as conn:
        for table in (churn, calm):
            await conn.execute(
                f"CREATE TABLE {table} (id int PRIMARY KEY, v int) WITH "
                "(autovacuum_vacuum_threshold = 100, autovacuum_vacuum_scale_factor = 0)"
            )
            await conn.execute(f"INSERT INTO {table} SELECT g, 0 FROM generate_series(1, 500) g")
        await conn.execute(f"UPDATE {churn} SET v = v + 1")  # 500 dead rows: past 100
        await conn.execute(f"UPDATE {calm} SET v = v + 1 WHERE id <= 60")  # 60: not yet
        await conn.execute("SELECT pg_stat_force_next_flush()")
    try:
        async with asyncio.timeout(15):  # the statistics reach the views within a second
            while await _dead(pool, churn) < 500 or await _dead(pool, calm) < 60:
                await asyncio.sleep(0.1)
        # Disabled (the server's autovacuum runs), it leaves them alone.
        async with StandInVacuum(pool, enabled=False, interval_s=0.05) as idle:
            await asyncio.sleep(0.3)
        assert idle.runs == {}
        assert await _dead(pool, churn) >= 500
        async with StandInVacuum(pool, enabled=True, interval_s=0.05) as vacuum:
            async with asyncio.timeout(10):
                while churn not in vacuum.runs:
                    await asyncio.sleep(0.05)
        assert vacuum.runs[churn] == 1
        assert calm not in vacuum.runs
        assert await _dead(pool, churn) == 0
        assert await _dead(pool, calm) >= 60
        # Vacuumed, it is no longer due.
        assert churn not in await vacuum.vacuum_due()
    finally:
        await pool.execute(f"DROP TABLE {churn}, {calm}")

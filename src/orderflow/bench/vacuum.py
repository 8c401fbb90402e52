"""Autovacuum's work on the bench's own database, when the server runs without autovacuum.

Every deployment runs autovacuum (ADR 0011); a PostgreSQL shared by a development machine may
not (this one ships ``autovacuum = off``). A lifecycle run there measures the dead rows it left
behind rather than the system. The stand-in does what the autovacuum launcher would do, for the
run's database only: every couple of seconds it vacuums (and analyzes) each table whose dead
rows have passed that table's autovacuum threshold (its own storage parameters, as migration
0003 sets them, else the server's), throttled by autovacuum's cost settings.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

import asyncpg

# Tables past their autovacuum threshold: threshold + scale factor x rows, from the table's
# storage parameters when it has them (migration 0003), else the server's settings.
_DUE = """
WITH t AS (
    SELECT s.schemaname, s.relname, s.n_dead_tup, greatest(c.reltuples, 0) AS reltuples,
           (SELECT split_part(o, '=', 2) FROM unnest(c.reloptions) o
            WHERE o LIKE 'autovacuum_vacuum_threshold=%') AS threshold,
           (SELECT split_part(o, '=', 2) FROM unnest(c.reloptions) o
            WHERE o LIKE 'autovacuum_vacuum_scale_factor=%') AS scale_factor
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
)
SELECT format('%I.%I', schemaname, relname) AS name, relname FROM t
WHERE n_dead_tup > coalesce(threshold::float8,
                            current_setting('autovacuum_vacuum_threshold')::float8)
                   + coalesce(scale_factor::float8,
                              current_setting('autovacuum_vacuum_scale_factor')::float8)
                     * reltuples
ORDER BY n_dead_tup DESC
"""


class StandInVacuum:
    """While open, vacuums the pool's database as autovacuum would, unless ``enabled`` is
    False (the server's autovacuum does it). ``runs``: vacuums made, by table."""

    def __init__(self, pool: asyncpg.Pool, *, enabled: bool, interval_s: float = 2.0) -> None:
        self.pool = pool
        self.enabled = enabled
        self.interval_s = interval_s
        self.runs: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StandInVacuum:
        if self.enabled:
            self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def vacuum_due(self) -> list[str]:
        """Vacuum every table past its threshold now; the tables vacuumed."""
        async with self.pool.acquire() as conn:
            due = await conn.fetch(_DUE)
            if not due:
                return []
            # Autovacuum's own throttle (PostgreSQL's defaults for it), not a manual
            # VACUUM's full speed: the run must not pay for a faster vacuum than production.
            await conn.execute("SET vacuum_cost_delay = '2ms'; SET vacuum_cost_limit = 200")
            try:
                for row in due:
                    await conn.execute(f"VACUUM (ANALYZE) {row['name']}")
                    self.runs[row["relname"]] = self.runs.get(row["relname"], 0) + 1
            finally:
                await conn.execute("RESET vacuum_cost_delay; RESET vacuum_cost_limit")
        return [row["relname"] for row in due]

    async def _loop(self) -> None:
        while not self._stop.is_set():
            # A lost connection is not fatal to the run; the next look tries again.
            with contextlib.suppress(
                asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError
            ):
                await self.vacuum_due()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._stop.wait()

"""A bench run's surroundings: its own database, settings for the servers, the live display."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson
from rich.console import Console
from rich.live import Live

from orderflow.access import create_key
from orderflow.bench.servers import free_port
from orderflow.domain.access import Role
from orderflow.kernel.database import create_pool, drop_database, ensure_database, with_database
from orderflow.operations import Check, run_audit
from orderflow.settings import DEFAULT_RATE_LIMITS, Settings, get_settings

# Server settings that change what a run can show; reported with every run.
_REPORTED_SETTINGS = ("autovacuum", "synchronous_commit", "fsync", "shared_buffers")
BENCH_RATE_LIMITS = orjson.dumps(dict.fromkeys(DEFAULT_RATE_LIMITS, "10000000/1")).decode()


@dataclass
class BenchRun:
    """One bench invocation: a fresh database and per-run broker names."""

    settings: Settings
    run_id: str
    log_dir: Path
    console: Console
    keep_db: bool = False
    pool: asyncpg.Pool | None = None
    server_workers: int = 2
    loadgen_processes: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    auth: dict[str, str] = field(default_factory=dict)
    postgresql: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        *,
        database: str | None,
        console: Console,
        log_dir: Path | None = None,
        kind: str = "bench",
    ) -> BenchRun:
        """Settings for a run: its own database, exchange and queue prefix (named for the
        ``kind`` of run: bench or chaos)."""
        base = get_settings()
        run_id = uuid.uuid4().hex[:8]
        dsn = with_database(base.dsn(), database or f"orderflow_{kind}_{run_id}")
        settings = base.model_copy(
            update={
                "database_url": type(base.database_url)(dsn),
                "exchange": f"orderflow.{kind}.{run_id}",
                "queue_prefix": f"orderflow.{kind}.{run_id}",
                # ``orderflow up`` starts the run's payment gateway: on a port of its own.
                "gateway_url": f"http://127.0.0.1:{free_port()}",
            }
        )
        return cls(settings, run_id, log_dir or Path(f".{kind}/{run_id}"), console)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a server subprocess: this run's database and names."""
        s = self.settings
        return {
            **os.environ,
            "ORDERFLOW_DATABASE_URL": s.dsn(),
            "ORDERFLOW_EXCHANGE": s.exchange,
            "ORDERFLOW_QUEUE_PREFIX": s.queue_prefix,
            "ORDERFLOW_GATEWAY_URL": s.gateway_url,
            "ORDERFLOW_LOG_LEVEL": "WARNING",
            "ORDERFLOW_ENVIRONMENT": "development",
            "ORDERFLOW_REDIS_KEY_PREFIX": f"orderflow:bench:{s.queue_prefix.rsplit('.', 1)[-1]}",
            # The limiter runs (one Redis call per request, as in production) but the load
            # generator, one key, must not be limited: that would measure the limit.
            "ORDERFLOW_RATE_LIMITS": BENCH_RATE_LIMITS,
            **self.extra_env,
            **extra,
        }

    async def open(self) -> asyncpg.Pool:
        """Create and migrate the run's database; open a small pool on it."""
        dsn = self.settings.dsn()
        await drop_database(dsn)  # a reused --database name starts fresh too
        await ensure_database(dsn)
        await asyncio.to_thread(_upgrade_schema, dsn)
        self.pool = await create_pool(self.settings, min_size=1, max_size=4)
        self.postgresql = {
            name: str(await self.pool.fetchval(f"SHOW {name}")) for name in _REPORTED_SETTINGS
        }
        if self.autovacuum_off:
            self.console.print(
                "[yellow]PostgreSQL runs with autovacuum off: `bench lifecycle` vacuums its "
                "own database as autovacuum would (--no-vacuum to let dead rows pile up; "
                "docs/performance.md)[/yellow]"
            )
        # Orders are placed as an admin would (with customer_id), authenticated like any call.
        issued = await create_key(self.pool, role=Role.ADMIN, customer_id=None, label="bench")
        self.auth = {"Authorization": f"Bearer {issued.token}"}
        return self.pool

    @property
    def autovacuum_off(self) -> bool:
        """Whether the server runs without autovacuum (known once the database is open)."""
        return self.postgresql.get("autovacuum") == "off"

    async def fresh_database(self) -> asyncpg.Pool:
        """Start over on an empty database (a scenario must not inherit another's orders)."""
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        return await self.open()

    async def close(self) -> None:
        """Close the pool; drop the database unless asked to keep it."""
        if self.pool is not None:
            with contextlib.suppress(Exception):  # a broker hiccup must not hide the results
                await self.delete_broker_topology(self.pool)
            await self.pool.close()
            self.pool = None
        if not self.keep_db:
            await drop_database(self.settings.dsn())

    async def delete_broker_topology(self, pool: asyncpg.Pool) -> None:
        """Remove the run's exchange and queues from the shared broker."""
        import aio_pika

        from orderflow.domain import saga
        from orderflow.kernel.topology import Names, delete_topology

        settings = self.settings.model_copy(update={"autopilot": True})
        handlers = [s.name for s in saga.subscriptions(autopilot=True)]
        connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value(), timeout=10)
        async with connection:
            channel = await connection.channel()
            await delete_topology(channel, Names.from_settings(settings), handlers)

    async def audit(self, *, skip: frozenset[Check] = frozenset()) -> dict[str, object]:
        """Run the audit over the run's database (grace 0: everything must have settled)."""
        assert self.pool is not None
        report = await run_audit(self.pool, grace_s=0, checks=frozenset(Check) - skip)
        return {
            "ok": report.ok,
            "orders": report.orders,
            "counts": report.counts(),
            "skipped": sorted(c.value for c in skip),
            "first": [v.as_dict() for v in report.violations[:10]],
        }

    @contextmanager
    def progress(self, title: str, total_s: float) -> Iterator[ProgressLine]:
        """A live line for a running step: elapsed time, answers, answers/s, failures."""
        line = ProgressLine(title, total_s)
        with Live(line.render(), console=self.console, refresh_per_second=4) as live:
            line.live = live
            yield line


@dataclass
class ProgressLine:
    title: str
    total_s: float
    started: float = field(default_factory=time.monotonic)
    live: Live | None = None
    extra: str = ""

    def render(self, done: int = 0, failed: int = 0) -> str:
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        return (
            f"[bold]{self.title}[/bold]  {elapsed:5.1f}/{self.total_s:.0f} s  "
            f"{done} answered  {rate:7.1f}/s  {failed} failed  {self.extra}"
        )

    def update(self, done: int, failed: int) -> None:
        if self.live is not None:
            self.live.update(self.render(done, failed))


def _upgrade_schema(dsn: str) -> None:
    # The schema only: the broker topology is declared by `orderflow up` when a scenario
    # needs it, so that place and the ceilings do not depend on the broker.
    from alembic import command

    from orderflow.migrations import alembic_config

    command.upgrade(alembic_config(dsn), "head")  # type: ignore[arg-type]

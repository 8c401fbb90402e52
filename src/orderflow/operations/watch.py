"""The worker's periodic duties that export what the system holds: the outbox backlog and the
age of its oldest unpublished event, the retries and deferrals scheduled in PostgreSQL, orders
per status, and the invariant audit's findings.

Every worker runs them and exports the same figures (aggregate with ``max``); they survive the
relay being down, which is exactly when the outbox figures matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from orderflow.domain.orders import OrderStatus
from orderflow.kernel import scheduled
from orderflow.kernel.failures import is_transient
from orderflow.observability import metrics
from orderflow.operations.audit import run_audit
from orderflow.operations.invariants import Check
from orderflow.operations.monitoring_store import system_figures
from orderflow.settings import Settings

log = structlog.get_logger(__name__)

# The audit's stale-order check is the SLA watchdog's business (orderflow_orders_overdue): an
# order waiting for the warehouse is late, not an invariant broken. The gateway's ledger is read
# over its API by ``orderflow audit --gateway`` only.
AUDITED: tuple[Check, ...] = tuple(c for c in Check if c not in {Check.STALE, Check.GATEWAY_LEDGER})


async def every(
    interval_s: float, step: Callable[[], Awaitable[None]], *, stop: asyncio.Event, duty: str
) -> None:
    """Run ``step`` every ``interval_s`` until ``stop`` (never when 0). A transient failure
    (the database restarting, a session cut) is logged and the next round tries again;
    anything else escapes to the duty's supervisor (``kernel.duties``), which restarts it."""
    if not interval_s:
        return
    while not stop.is_set():
        try:
            await step()
        except Exception as exc:
            if not is_transient(exc):
                raise  # the duty's supervisor logs it and starts the duty again
            log.warning(f"{duty}_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()


async def watch_system(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Export the outbox backlog, its oldest event's age, the scheduled deliveries waiting and
    orders per status, until ``stop``."""

    async def look() -> None:
        figures = await system_figures(pool)
        metrics.OUTBOX_BACKLOG.set(figures.outbox_backlog)
        metrics.OUTBOX_OLDEST_AGE.set(figures.outbox_oldest_age_s)
        for reason, waiting in (await scheduled.waiting(pool)).items():
            metrics.SCHEDULED_WAITING.labels(reason).set(waiting)
        for status in OrderStatus:
            metrics.ORDERS_BY_STATUS.labels(status.value).set(
                figures.orders_by_status.get(status.value, 0)
            )

    await every(settings.system_watch_interval_s, look, stop=stop, duty="system_watch")


async def audit_invariants(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Run the invariant audit every ``audit_interval_s`` and export its violations per check;
    each violation is logged too (``orderflow audit`` lists them again on demand)."""

    async def audit() -> None:
        report = await run_audit(
            pool,
            grace_s=settings.audit_grace_s,
            unpaid_ttl_s=settings.unpaid_order_ttl_s,
            checks=AUDITED,
        )
        counts = report.counts()
        for check in AUDITED:
            metrics.INVARIANT_VIOLATIONS.labels(check.value).set(counts.get(check.value, 0))
        metrics.AUDIT_LAST_RUN.set(time.time())
        for violation in report.violations[:20]:
            log.error("invariant_violated", **violation.as_dict())
        log.info("invariant_audit", orders=report.orders, violations=len(report.violations))

    await every(settings.audit_interval_s, audit, stop=stop, duty="invariant_audit")
